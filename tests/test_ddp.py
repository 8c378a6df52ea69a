"""Two Gloo processes on the CPU: DDP keeps the ranks' weights identical, and the sharded
validation (rank::world, no padding duplicates, all-reduced edit sums) equals a
single-process one."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from htr_augment.data import LmdbWordDataset
from htr_augment.training import load_checkpoint
from recognizer.model import load_recognizer
from recognizer.train import evaluate, train

from .test_recognizer_train import TINY, fast_config, make_word_lmdb, random_words

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with Gloo is not available")


@pytest.fixture(scope="module")
def lmdbs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    # 7 validation words: not a multiple of the world size, so padded sharding would double-count.
    return make_word_lmdb(tmp / "train", random_words(24, 3)), make_word_lmdb(tmp / "val", random_words(7, 4))


def _worker(rank: int, world: int, rendezvous: str, train_path: str, val_path: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        config = fast_config(max_steps=4, batch_size=4)
        result = train(config, LmdbWordDataset(train_path), LmdbWordDataset(val_path), out, device="cpu",
                       progress=False)
        # This rank's own weights, as trained in memory (not the checkpoint rank 0 wrote).
        local = torch.nn.utils.parameters_to_vector(result.model.parameters()).detach().clone()
        model, alphabet, _ = load_recognizer(Path(out) / "last.pt")
        counts, _ = evaluate(model, LmdbWordDataset(val_path), alphabet, batch_size=2)
        torch.save({"counts": counts.as_list(), "params": local}, Path(out) / f"rank{rank}.pt")
        dist.barrier()  # neither rank tears Gloo down while the other still talks (one SIGABRT seen in CI)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_agree_with_one_process(lmdbs, tmp_path):
    train_path, val_path = lmdbs
    out = tmp_path / "run"
    mp.spawn(_worker, args=(2, str(tmp_path / "rendezvous"), str(train_path), str(val_path), str(out)),
             nprocs=2, join=True)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 4 and len(ckpt["rng"]) == 2  # both ranks' RNG states, for an exact resume
    # 24 samples over 2 ranks in batches of 4: 3 steps per epoch.
    assert ckpt["epoch"] == 1 and ckpt["batch_in_epoch"] == 1

    model, alphabet, _ = load_recognizer(out / "last.pt")
    single, _ = evaluate(model, LmdbWordDataset(val_path), alphabet, batch_size=3)
    assert single.samples == 7
    assert ranks[0]["counts"] == ranks[1]["counts"] == single.as_list()


def test_torchrun_command_line(lmdbs, tmp_path):
    train_path, val_path = lmdbs
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "recognizer.train", "--config", str(TINY), "--train", str(train_path), "--val", str(val_path),
           "--out", str(out), "--max-steps", "2", "--num-workers", "0", "--device", "cpu", "--no-progress"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 2 and ckpt["extra"]["world_size"] == 2
    assert (out / "best.pt").is_file() and (out / "metrics.csv").is_file()
    assert not list(out.glob("*.tmp"))
