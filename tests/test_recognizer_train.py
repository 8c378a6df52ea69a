import os
import random
import signal
from pathlib import Path

import pytest
import torch

from htr_augment.alphabet import Alphabet
from htr_augment.data import LmdbWordDataset, WordSample
from htr_augment.data.build_lmdb import BuildOptions, build
from htr_augment.data.sources import read_gt
from htr_augment.images import to_tensor
from htr_augment.training import load_checkpoint, read_metrics_csv
from recognizer.config import load_recognizer_config
from recognizer.model import load_recognizer
from recognizer.train import main, train

from .conftest import draw_word, write_gt

TINY = Path(__file__).resolve().parents[1] / "configs" / "recognizer" / "tiny.toml"


def random_words(n: int, seed: int, chars: str = "abcdefghij") -> list[str]:
    rnd = random.Random(seed)
    return ["".join(rnd.choice(chars) for _ in range(rnd.randint(2, 5))) for _ in range(n)]


def make_word_lmdb(folder: Path, words: list[str]) -> Path:
    """An LMDB of drawn words, 32 px high."""
    build(read_gt(write_gt(folder, words, height=32)), folder / "words.lmdb", BuildOptions(), progress=False)
    return folder / "words.lmdb"


def fast_config(**train) -> dict:
    """configs/recognizer/tiny.toml shrunk to seconds."""
    config = load_recognizer_config(TINY)
    config["train"].update({"batch_size": 8, "eval_batch_size": 8, "warmup_steps": 2, "log_every": 1,
                            "num_workers": 0, "checkpoint_every": 0, "eval_every": 0, "log_samples": 2, **train})
    return config


@pytest.fixture(scope="module")
def lmdbs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("words")
    return make_word_lmdb(tmp / "train", random_words(36, 0)), make_word_lmdb(tmp / "val", random_words(7, 1))


def test_ctc_loss_decreases_on_any_dataset_and_sampler(tmp_path):
    words = random_words(8, 2, "abcd")
    data = [WordSample(to_tensor(draw_word(w, height=32)), w, "synthetic") for w in words]  # a plain list
    config = fast_config(lr=3e-3, max_steps=40)
    config["augment"]["enabled"] = False
    batches = [[0, 2, 4, 6], [1, 3, 5, 7]]  # any iterable of index lists serves as a batch sampler
    result = train(config, data, data[:4], tmp_path / "run", alphabet=Alphabet("abcd"), batch_sampler=batches,
                   progress=False)
    assert result.epoch == 20
    losses = [v for _, v in read_metrics_csv(tmp_path / "run" / "metrics.csv")["train/loss"]]
    assert result.step == 40 and len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_resume_continues_exactly(lmdbs, tmp_path):
    train_path, val_path = lmdbs
    config = fast_config(max_steps=12, eval_every=4)  # 36 samples / 8 = 5 batches per epoch
    ds = lambda p: LmdbWordDataset(p, height=32)  # noqa: E731
    straight = train(config, ds(train_path), ds(val_path), tmp_path / "straight", progress=False)
    first = train(config, ds(train_path), ds(val_path), tmp_path / "split", stop_after=7, progress=False)
    assert first.step == 7 and load_checkpoint(tmp_path / "split" / "last.pt")["batch_in_epoch"] == 2
    resumed = train(config, ds(train_path), ds(val_path), tmp_path / "split", resume=True, progress=False)
    assert straight.step == resumed.step == 12 and straight.epoch == resumed.epoch == 2
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    for name, tensor in a["models"]["recognizer"].items():
        assert torch.allclose(tensor.float(), b["models"]["recognizer"][name].float()), name
    assert a["optimizers"]["adamw"]["state"][0]["step"] == b["optimizers"]["adamw"]["state"][0]["step"]
    assert a["schedulers"] == b["schedulers"]
    assert straight.val.as_list() == resumed.val.as_list()
    # The logs read as one run: one row per step and scalar.
    steps = [s for s, _ in read_metrics_csv(tmp_path / "split" / "metrics.csv")["train/loss"]]
    assert steps == list(range(1, 13))


class _SignalAt:
    """A dataset that sends this process SIGINT when sample `at` is read."""

    def __init__(self, dataset, at: int):
        self.dataset, self.at, self.alphabet = dataset, at, dataset.alphabet

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        if i == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return self.dataset[i]


def test_a_signal_stops_after_the_step_with_a_checkpoint(lmdbs, tmp_path):
    train_path, _ = lmdbs
    config = fast_config(max_steps=50, batch_size=4)
    config["augment"]["enabled"] = False
    result = train(config, _SignalAt(LmdbWordDataset(train_path), at=0), None, tmp_path, progress=False)
    assert result.interrupted and 1 <= result.step < 50
    assert load_checkpoint(tmp_path / "last.pt")["step"] == result.step


def test_command_line_run(lmdbs, tmp_path, capsys):
    train_path, val_path = lmdbs
    out = tmp_path / "run"
    args = ["--config", str(TINY), "--train", str(train_path), "--val", str(val_path), "--out", str(out),
            "--max-steps", "3", "--num-workers", "1", "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    for name in ("last.pt", "best.pt", "metrics.csv", "config.json", "alphabet.json", "train.log"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    metrics = read_metrics_csv(out / "metrics.csv")
    assert {"train/loss", "train/lr", "train/lines_per_s", "val/cer", "val/wer"} <= set(metrics)
    model, alphabet, config = load_recognizer(out / "best.pt")
    assert alphabet == LmdbWordDataset(train_path).alphabet and config["train"]["max_steps"] == 3
    assert main(args) == 2  # the run exists: --resume or another --out
    assert "--resume" in capsys.readouterr().err
    assert main(args + ["--resume", "--max-steps", "5"]) == 0
    assert load_checkpoint(out / "last.pt")["step"] == 5
    other = Alphabet("abcdefghijxyz")
    other.save(tmp_path / "other.json")
    assert main(args + ["--resume", "--alphabet", str(tmp_path / "other.json")]) == 2
    err = capsys.readouterr().err
    assert "alphabet" in err and "'xyz'" in err


def test_help_explains_the_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--resume" in text and "torchrun" in text and "best.pt" in text
