"""Train the CTC recognizer, on one process or many (torchrun + DistributedDataParallel).

  python -m recognizer.train --config configs/recognizer/base.toml \\
      --train train.lmdb --val val.lmdb --out runs/NAME [--resume]
  torchrun --nproc_per_node 2 -m recognizer.train ...   # same flags, DDP

`train()` takes any torch Dataset yielding WordSample (real, synthetic, mixed) and an
optional sampler or batch sampler, so data mixing plugs in without touching the loop.

Exact resume: the checkpoint holds model, optimizer, scheduler, step, epoch, the
number of batches already consumed in the epoch and every rank's RNG states. The
epoch's batch order is a function of (seed, epoch), augmentation of (seed, epoch,
sample index), so a resumed run replays the remaining batches of the epoch exactly.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, ConcatDataset, DataLoader, Dataset, DistributedSampler, Sampler, Subset
from tqdm import tqdm

from htr_augment.alphabet import Alphabet
from htr_augment.config import ConfigError
from htr_augment.data import CTCCollate, LmdbWordDataset
from htr_augment.images import pad_batch
from htr_augment.lexicon import LEXICON_WEIGHTS
from htr_augment.metrics import EditCounts
from htr_augment.training import (CheckpointError, MetricsLogger, all_gather_objects, all_reduce_sum, barrier,
                                  check_alphabet, cleanup_distributed, init_distributed, load_checkpoint,
                                  make_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state,
                                  StopRequest, ignore_sigint)

from .augment import AugmentedDataset, Augmenter
from .config import load_recognizer_config, make_config
from .decoding import greedy_decode
from .losses import ctc_losses
from .model import CRNN, MODEL_NAME

log = logging.getLogger("recognizer.train")

# [train] keys that only change how a run is executed or watched, not what it computes:
# on --resume they are taken from the current config, everything else from the checkpoint.
RUNTIME_KEYS = ("num_workers", "eval_every", "checkpoint_every", "log_every", "log_samples", "eval_batch_size")
# What --synthetic-source mixes in: the GAN, fonts, or both interleaved (the benchmark's arms of those names).
SYNTHETIC_SOURCES = ("gan", "fonts", "gan+fonts")


@dataclass
class TrainResult:
    step: int
    epoch: int
    best_cer: float | None
    best_step: int | None
    val: EditCounts | None  # the last validation
    last_checkpoint: Path
    best_checkpoint: Path | None
    interrupted: bool = False  # stopped early by SIGINT/SIGTERM (checkpointed; resume continues)
    model: torch.nn.Module | None = None  # this process's trained model (last weights, not best)


# -- loss, schedule, evaluation ---------------------------------------------------------

def make_scheduler(optimizer: torch.optim.Optimizer, train_cfg: dict, total_steps: int):
    """Linear warm-up, then cosine decay to min_lr_ratio or steps of gamma at milestone fractions."""
    warmup = max(0, int(train_cfg["warmup_steps"]))
    kind = train_cfg["schedule"]
    floor = float(train_cfg["min_lr_ratio"])
    milestones = sorted(int(m * total_steps) for m in train_cfg["milestones"])
    gamma = float(train_cfg["gamma"])

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return gamma ** sum(step >= m for m in milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class EvalCollate:
    """Images and texts only: validation labels may hold characters outside the alphabet
    (they count as errors rather than being dropped)."""

    def __init__(self, width_multiple: int = 1):
        self.width_multiple = width_multiple

    def __call__(self, samples):
        images, widths = pad_batch([s.image for s in samples], self.width_multiple)
        return {"images": images, "widths": widths, "texts": [s.text for s in samples]}


@torch.no_grad()
def evaluate(model: CRNN, dataset: Dataset, alphabet: Alphabet, *, batch_size: int = 32,
             device: str | torch.device = "cpu", num_workers: int = 0, amp: str = "none",
             keep_samples: int = 0) -> tuple[EditCounts, list[tuple[torch.Tensor, str, str]]]:
    """Greedy-decoded corpus CER/WER of `model` on `dataset`.

    Under torch.distributed each rank reads the indices rank::world_size (no padding
    duplicates) and the edit sums are all-reduced, so the result equals a single-process
    evaluation. Returns (counts, up to `keep_samples` (image, reference, hypothesis) of
    this rank's share)."""
    model = model.module if isinstance(model, DistributedDataParallel) else model
    was_training = model.training
    model.eval()
    device = torch.device(device)
    rank, world = _rank_world()
    shard = Subset(dataset, range(rank, len(dataset), world))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=EvalCollate(model.stride), pin_memory=device.type == "cuda",
                        generator=torch.Generator())  # own generator: leave the global RNG untouched
    counts = EditCounts()
    kept: list[tuple[torch.Tensor, str, str]] = []
    for batch in loader:
        images = batch["images"].to(device, non_blocking=True)
        with _autocast(device, amp):
            out = model(images, batch["widths"])
        hyps = greedy_decode(out.log_probs, out.lengths, alphabet)
        for i, (ref, hyp) in enumerate(zip(batch["texts"], hyps)):
            counts.add(ref, hyp)
            if len(kept) < keep_samples:
                kept.append((batch["images"][i, :, :, : int(batch["widths"][i])], ref, hyp))
    model.train(was_training)
    return EditCounts.from_list(all_reduce_sum(counts.as_list())), kept


# -- the training loop --------------------------------------------------------------------

class _SkipBatches(Sampler):
    """A batch sampler without its first `skip` batches (resume inside an epoch without reading them)."""

    def __init__(self, batch_sampler, skip: int):
        self.batch_sampler = batch_sampler
        self.skip = skip

    def __iter__(self):
        return itertools.islice(iter(self.batch_sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.skip)


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _autocast(device: torch.device, amp: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16" and device.type == "cuda")


def _set_epoch(obj: Any, epoch: int) -> None:
    if hasattr(obj, "set_epoch"):
        obj.set_epoch(epoch)


def _resume_config(saved: dict, given: dict) -> dict:
    """The checkpoint's config, with the runtime keys of the given one (see RUNTIME_KEYS)."""
    config = json.loads(json.dumps(saved))
    changed = []
    for section, values in given.items():
        for key, value in values.items():
            if section == "train" and key in RUNTIME_KEYS:
                config[section][key] = value
            elif saved.get(section, {}).get(key) != value:
                changed.append(f"{section}.{key}")
    if changed:
        log.warning("resuming: the config differs from the checkpoint's in %s; continuing with the "
                    "checkpoint's values", ", ".join(changed))
    return config


def train(config: dict, train_dataset: Dataset, val_dataset: Dataset | None, out_dir: str | Path, *,
          alphabet: Alphabet | None = None, device: str | torch.device | None = None, resume: bool = False,
          sampler: Sampler | None = None, batch_sampler: Sampler | None = None, max_steps: int | None = None,
          stop_after: int | None = None, num_workers: int | None = None, progress: bool = True,
          on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train a CRNN; checkpoints and logs go to `out_dir` (written by rank 0 only).

    config: a full recognizer config (recognizer.config.make_config / load_recognizer_config).
    train_dataset: any Dataset yielding WordSample; images at config data.height.
    val_dataset: the same, or None (then best.pt is never written).
    alphabet: class mapping; default `train_dataset.alphabet`.
    sampler / batch_sampler: replace the default shuffling (a DistributedSampler seeded with
        train.seed). Give at most one; under DDP it must shard by rank itself. It should be
        deterministic given `set_epoch(epoch)` (called each epoch) for an exact resume.
    resume: continue from out_dir/last.pt if it exists (else start a new run).
    max_steps, num_workers: override the config's train.max_steps / train.num_workers.
    stop_after: end this session after that step (checkpointed) as if interrupted; the
        schedule still runs to the full length on resume.
    on_step: called with the step number after every optimizer step (e.g. a caller's progress bar).
    """
    if sampler is not None and batch_sampler is not None:
        raise ValueError("give a sampler or a batch_sampler, not both")
    config = make_config(config)
    if max_steps is not None:
        config["train"]["max_steps"] = int(max_steps)
    if num_workers is not None:
        config["train"]["num_workers"] = int(num_workers)
    alphabet = alphabet or getattr(train_dataset, "alphabet", None)
    if not isinstance(alphabet, Alphabet):
        raise ValueError("pass alphabet= (the training dataset has no .alphabet)")
    dist_info = init_distributed(device)
    dev, rank, world, is_main = dist_info.device, dist_info.rank, dist_info.world_size, dist_info.is_main
    out_dir = Path(out_dir)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"

    ckpt = None
    if resume and last_path.is_file():
        ckpt = load_checkpoint(last_path, map_location="cpu", kind="recognizer")
        check_alphabet(ckpt["alphabet"], alphabet)
        config = _resume_config(ckpt["config"], config)
        if max_steps is not None:
            config["train"]["max_steps"] = int(max_steps)
    elif resume:
        if is_main:
            log.info("--resume: no %s yet, starting a new run", last_path)
    elif last_path.exists():
        raise FileExistsError(f"{last_path} exists: pass --resume to continue that run, or choose another --out")
    tc = config["train"]

    seed_everything(tc["seed"])  # identical initial weights on every rank
    model = CRNN(config, len(alphabet)).to(dev)
    if rank:
        seed_everything(tc["seed"] + 1_000_003 * rank)  # but different dropout masks
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc["lr"], weight_decay=tc["weight_decay"])

    train_data: Dataset = train_dataset
    if config["augment"]["enabled"]:
        train_data = AugmentedDataset(train_dataset, Augmenter(config["augment"]), seed=tc["seed"])
    if batch_sampler is None and sampler is None:
        sampler = DistributedSampler(train_data, num_replicas=world, rank=rank, shuffle=True, seed=tc["seed"])
    if batch_sampler is None:
        batch_sampler = BatchSampler(sampler, tc["batch_size"], drop_last=False)
    steps_per_epoch = len(batch_sampler)
    if steps_per_epoch == 0:
        raise ValueError("the training set gives no batch (is it empty?)")
    total_steps = tc["max_steps"] if tc["max_steps"] > 0 else tc["epochs"] * steps_per_epoch
    scheduler = make_scheduler(optimizer, tc, total_steps)

    step = epoch = batch_in_epoch = 0
    best_cer: float | None = None
    best_step: int | None = None
    if ckpt is not None:
        model.load_state_dict(ckpt["models"][MODEL_NAME])
        optimizer.load_state_dict(ckpt["optimizers"]["adamw"])
        scheduler.load_state_dict(ckpt["schedulers"]["lr"])
        step, epoch, batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        best_cer, best_step = ckpt["extra"].get("best_cer"), ckpt["extra"].get("best_step")
        if len(ckpt["rng"]) == world:
            set_rng_state(ckpt["rng"][rank])
        else:
            # Shards and RNG streams depend on the world size: restart at an epoch boundary.
            if is_main:
                log.warning("resuming on %d processes a run checkpointed on %d: continuing from the start "
                            "of epoch %d, with fresh RNG seeds", world, len(ckpt["rng"]),
                            epoch + (batch_in_epoch > 0))
            epoch, batch_in_epoch = epoch + (batch_in_epoch > 0), 0
            seed_everything(tc["seed"] + 1_000_003 * rank + step)
        if is_main:
            log.info("resumed %s at step %d (epoch %d, batch %d)", last_path, step, epoch, batch_in_epoch)
        del ckpt

    ddp_model = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None) \
        if world > 1 else model
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        alphabet.save(out_dir / "alphabet.json")
        n_params = sum(p.numel() for p in model.parameters())
        log.info("%d training samples, %d steps per epoch, %d steps in all; %.2fM parameters; %d process(es) on %s",
                 len(train_data), steps_per_epoch, total_steps, n_params / 1e6, world, dev)
    metrics = MetricsLogger(out_dir, enabled=is_main, resume_step=step if step else None)

    def checkpoint(path: Path) -> None:
        rngs = all_gather_objects(rng_state())  # collective: every rank calls it
        if is_main:
            save_checkpoint(make_checkpoint(
                "recognizer", config, alphabet, step, epoch, batch_in_epoch=batch_in_epoch,
                models={MODEL_NAME: model.state_dict()}, optimizers={"adamw": optimizer.state_dict()},
                schedulers={"lr": scheduler.state_dict()}, rng=rngs,
                extra={"best_cer": best_cer, "best_step": best_step, "total_steps": total_steps,
                       "world_size": world}), path)

    def validate() -> EditCounts:
        nonlocal best_cer, best_step
        counts, kept = evaluate(model, val_dataset, alphabet, batch_size=tc["eval_batch_size"], device=dev,
                                num_workers=tc["num_workers"], amp=tc["amp"], keep_samples=tc["log_samples"])
        improved = best_cer is None or counts.cer < best_cer
        if improved:
            best_cer, best_step = counts.cer, step
        metrics.scalars({"val/cer": counts.cer, "val/wer": counts.wer, "val/best_cer": best_cer}, step)
        if kept:
            rows = "\n".join(f"| {_md(ref)} | {_md(hyp)} |" for _, ref, hyp in kept)
            metrics.text("val/predictions", "| reference | prediction |\n|---|---|\n" + rows, step)
            for i, (image, _, _) in enumerate(kept):
                metrics.image(f"val/sample_{i}", image, step)
        metrics.flush()
        if is_main:
            log.info("step %d: val CER %.4f  WER %.4f  (%d lines)%s", step, counts.cer, counts.wer, counts.samples,
                     "  new best" if improved else "")
        if improved:
            checkpoint(best_path)
        return counts

    collate = CTCCollate(alphabet, model.stride)
    bar = tqdm(total=total_steps, initial=step, desc="training", unit="step", dynamic_ncols=True,
               disable=not (progress and is_main))
    last_val: EditCounts | None = None
    window = _Window()
    smoothed = None
    ddp_model.train()
    stop = step >= total_steps or (stop_after is not None and step >= stop_after)
    interrupted = False
    with StopRequest() as stop_request:
        try:
            while not stop:
                _set_epoch(train_data, epoch)
                _set_epoch(batch_sampler, epoch)
                _set_epoch(sampler, epoch)
                loader = DataLoader(train_data, batch_sampler=_SkipBatches(batch_sampler, batch_in_epoch),
                                    collate_fn=collate, num_workers=tc["num_workers"],
                                    pin_memory=dev.type == "cuda", worker_init_fn=ignore_sigint,
                                    generator=torch.Generator().manual_seed(tc["seed"] * 100_003 + epoch))
                for batch in loader:
                    images = batch["images"].to(dev, non_blocking=True)
                    with _autocast(dev, tc["amp"]):
                        out = ddp_model(images, batch["widths"])
                    loss, main, aux = ctc_losses(out, batch["targets"].to(dev), batch["target_lengths"].to(dev),
                                                 tc["shortcut_weight"])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    norm = torch.nn.utils.clip_grad_norm_(
                        model.parameters(), tc["grad_clip"] if tc["grad_clip"] > 0 else float("inf"))
                    if torch.isfinite(norm):  # the same on every rank: gradients are already averaged
                        optimizer.step()
                    else:
                        window.skipped += 1
                    scheduler.step()
                    step += 1
                    batch_in_epoch += 1
                    epoch_done = batch_in_epoch == steps_per_epoch
                    if epoch_done:
                        epoch, batch_in_epoch = epoch + 1, 0
                    loss_value = loss.item()
                    window.add(loss_value, main.item(), aux.item() if aux is not None else 0.0, images.shape[0])
                    smoothed = loss_value if smoothed is None else 0.95 * smoothed + 0.05 * loss_value
                    interrupted = stop_request.agreed()
                    finished = (step >= total_steps or (stop_after is not None and step >= stop_after)
                                or interrupted)

                    if step % tc["log_every"] == 0 or finished:
                        scalars = window.scalars(world)
                        scalars.update({"train/lr": scheduler.get_last_lr()[0], "train/grad_norm": float(norm),
                                        "train/epoch": epoch + batch_in_epoch / steps_per_epoch})
                        metrics.scalars(scalars, step)
                        metrics.flush()
                        if window.skipped and is_main:
                            log.warning("step %d: %d update(s) skipped for a non-finite gradient", step,
                                        window.skipped)
                        bar.set_postfix(loss=f"{smoothed:.3f}", lines_per_s=f"{scalars['train/lines_per_s']:.1f}",
                                        epoch=epoch)
                        window = _Window()
                    bar.update(1)
                    if on_step is not None:
                        on_step(step)

                    if val_dataset is not None and not interrupted and (
                            (tc["eval_every"] > 0 and step % tc["eval_every"] == 0)
                            or (tc["eval_every"] <= 0 and epoch_done) or step >= total_steps):
                        t0 = time.perf_counter()
                        last_val = validate()
                        ddp_model.train()
                        window.start += time.perf_counter() - t0  # lines/s measures training only
                    if (tc["checkpoint_every"] > 0 and step % tc["checkpoint_every"] == 0) or epoch_done or finished:
                        checkpoint(last_path)
                    if finished:
                        stop = True
                        break
        finally:
            bar.close()
            metrics.close()
    if interrupted and is_main:
        log.warning("stopped by a signal at step %d; saved %s (continue with --resume)", step, last_path)
    barrier()
    return TrainResult(step, epoch, best_cer, best_step, last_val, last_path,
                       best_path if best_cer is not None else None, interrupted, model)


class _Window:
    """Training scalars summed over the steps since the last log line."""

    def __init__(self):
        self.loss = self.ctc = self.ctc_shortcut = 0.0
        self.lines = self.steps = self.skipped = 0
        self.start = time.perf_counter()

    def add(self, loss: float, ctc: float, ctc_shortcut: float, lines: int) -> None:
        self.loss += loss
        self.ctc += ctc
        self.ctc_shortcut += ctc_shortcut
        self.lines += lines
        self.steps += 1

    def scalars(self, world: int) -> dict[str, float]:
        """Means over all ranks (a collective: every rank calls it)."""
        loss, ctc, aux, lines = all_reduce_sum([self.loss, self.ctc, self.ctc_shortcut, float(self.lines)])
        n = max(1, self.steps * world)
        return {"train/loss": loss / n, "train/ctc": ctc / n, "train/ctc_shortcut": aux / n,
                "train/lines_per_s": lines / max(1e-9, time.perf_counter() - self.start)}


def _md(text: str) -> str:
    """A label inside a Markdown table cell, shown verbatim."""
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`" if text else "(empty)"


# -- command line -----------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m recognizer.train",
        description="Train the CTC handwriting recognizer (CRNN, Retsinas et al. 2022) on LMDB datasets.\n"
                    "Writes to OUT: last.pt (every train.checkpoint_every steps, at each epoch end and at\n"
                    "the end), best.pt (best validation CER), metrics.csv and tensorboard/ (losses,\n"
                    "learning rate, CER/WER, sample predictions), config.json, alphabet.json, train.log.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Distributed: run the same command under torchrun, e.g.\n"
               "  torchrun --nproc_per_node 2 -m recognizer.train --config ... --train ... --val ... --out ...\n"
               "(NCCL on GPUs, Gloo on CPUs; train.batch_size is per process).\n"
               "Ctrl-C or SIGTERM finishes the current step, saves last.pt and exits (a second\n"
               "one stops at once); the same command plus --resume then continues exactly.")
    p.add_argument("--config", required=True, help="recognizer TOML config (e.g. configs/recognizer/base.toml); "
                   "keys it leaves out take the defaults of recognizer/config.py")
    p.add_argument("--train", required=True, action="append", metavar="LMDB",
                   help="training LMDB (repeat to concatenate several)")
    p.add_argument("--val", metavar="LMDB", help="validation LMDB (greedy-decoded CER/WER; selects best.pt)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT from OUT/last.pt "
                   "(starts a new run if there is none)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--max-steps", type=int, help="train this many optimizer steps (overrides the config)")
    p.add_argument("--stop-after", type=int, metavar="STEP",
                   help="end this session after STEP (checkpointed), e.g. to fit a time slot; --resume continues")
    p.add_argument("--num-workers", type=int, help="DataLoader worker processes per training process")
    p.add_argument("--alphabet", help="alphabet file (JSON or plain characters); default: the union of the "
                   "training LMDBs' alphabets. Training labels outside it are dropped (and counted)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    syn = p.add_argument_group("synthetic data (htr_augment.SyntheticWordDataset mixed into every batch)")
    syn.add_argument("--synthetic-ratio", type=float, default=0.0, metavar="R",
                     help="fraction of each batch that is generated words, in [0, 1) (default 0: none); "
                          "an epoch is still one pass over the real data")
    syn.add_argument("--synthetic-source", choices=SYNTHETIC_SOURCES, default="gan",
                     help="gan: the handwriting GAN's words (default); fonts: words rendered in handwriting fonts; "
                          "gan+fonts: half of the synthetic share from each (the best arm of the low-resource "
                          "Copiste word study, README)")
    syn.add_argument("--generator", metavar="CKPT", help="GAN checkpoint (default: the weights shipped in the package)")
    syn.add_argument("--synthetic-lexicon", metavar="FILE",
                     help="words to generate: text file or LMDB (default: the words of the training labels)")
    syn.add_argument("--synthetic-lexicon-weight", choices=LEXICON_WEIGHTS, default="type",
                     help="type: each distinct word alike (default); token: as often as it is listed, e.g. "
                          "the training labels' word frequencies, so short words keep their share")
    syn.add_argument("--synthetic-legible-by", metavar="NAME|CKPT",
                     help="a recognizer (e.g. copiste-words) that must read each generated word as its text: a "
                          "misread word is written again in other styles, same text (default: no filter)")
    syn.add_argument("--synthetic-legible-tries", type=int, default=4, metavar="N",
                     help="with --synthetic-legible-by: styles tried per word (default 4)")
    syn.add_argument("--synthetic-length", type=int, default=0,
                     help="distinct synthetic words before they repeat (default: 10 x the real training set)")
    return p.parse_args(argv)


def _setup_logging(out_dir: Path, is_main: bool) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(out_dir / "train.log", encoding="utf-8"))
    logging.basicConfig(level=logging.INFO if is_main else logging.WARNING, handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


def load_datasets(config: dict, train_paths: Sequence[str], val_path: str | None,
                  alphabet: Alphabet | None = None) -> tuple[Dataset, Dataset | None, Alphabet]:
    d = config["data"]
    if alphabet is None:
        chars: set[str] = set()
        for path in train_paths:
            chars.update(LmdbWordDataset(path, height=d["height"]).alphabet.chars)
        alphabet = Alphabet(sorted(chars))
    parts = [LmdbWordDataset(path, height=d["height"], alphabet=alphabet, min_length=d["min_length"],
                             max_length=d["max_length"] or None) for path in train_paths]
    train_ds = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    val_ds = LmdbWordDataset(val_path, height=d["height"]) if val_path else None  # keeps every label
    return train_ds, val_ds, alphabet


def mix_synthetic(config: dict, real: Dataset, alphabet: Alphabet, args: argparse.Namespace):
    """The real training set with generated words mixed in at args.synthetic_ratio of each batch."""
    from htr_augment import FontWordDataset, MixedDataset, MixingBatchSampler, SyntheticWordDataset
    from htr_augment.mixing import interleave
    from htr_augment.lexicon import label_words, load_lexicon, weigh_words

    if not 0 < args.synthetic_ratio < 1:
        raise ValueError(f"--synthetic-ratio must be in [0, 1), got {args.synthetic_ratio}")
    listed = (load_lexicon(args.synthetic_lexicon) if args.synthetic_lexicon
              else [w for path in args.train for w in label_words(load_lexicon(path))])
    words = weigh_words(listed, args.synthetic_lexicon_weight)
    usable = [w for w in words if not alphabet.missing(w)]  # the recognizer must be able to learn them
    if len(usable) < len(words):
        log.warning("synthetic lexicon: %d of %d words have characters outside the recognizer's alphabet; "
                    "left out", len(words) - len(usable), len(words))
    tc = config["train"]
    length = args.synthetic_length or 10 * len(real)
    common = dict(seed=tc["seed"], height=config["data"]["height"], legible_by=args.synthetic_legible_by,
                  tries=args.synthetic_legible_tries)
    kinds = args.synthetic_source.split("+")
    if args.generator and "gan" not in kinds:
        raise ValueError(f"--generator is for a GAN source; --synthetic-source {args.synthetic_source} has none")
    per_source = -(-length // len(kinds))  # interleaved: each source writes its share
    parts = [SyntheticWordDataset(args.generator, usable, length=per_source, **common) if kind == "gan"
             else FontWordDataset(usable, length=per_source, **common) for kind in kinds]
    synth = interleave(*parts)
    mixed = MixedDataset(real, synth)
    sampler = MixingBatchSampler(mixed, tc["batch_size"], args.synthetic_ratio, seed=tc["seed"])
    named = [f"the GAN {part.generator.info.get('path')}" if kind == "gan" else "handwriting fonts"
             for kind, part in zip(kinds, parts)]
    log.info("mixing %.0f%% synthetic words from %s (%d lexicon words%s)", 100 * args.synthetic_ratio,
             " and ".join(named), len(usable),
             f", each read by {args.synthetic_legible_by}" if args.synthetic_legible_by else "")
    return mixed, sampler


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = Path(args.out)
    try:
        config = load_recognizer_config(args.config)
        dist_info = init_distributed(args.device)
    except (ConfigError, RuntimeError) as e:
        print(f"recognizer.train: error: {e}", file=sys.stderr)
        return 2
    _setup_logging(out_dir, dist_info.is_main)
    try:
        alphabet = Alphabet.load(args.alphabet) if args.alphabet else None
        train_ds, val_ds, alphabet = load_datasets(config, args.train, args.val, alphabet)
        batch_sampler = None
        if args.synthetic_ratio:
            train_ds, batch_sampler = mix_synthetic(config, train_ds, alphabet, args)
        result = train(config, train_ds, val_ds, out_dir, alphabet=alphabet, device=dist_info.device,
                       resume=args.resume, max_steps=args.max_steps, stop_after=args.stop_after,
                       num_workers=args.num_workers, progress=not args.no_progress, batch_sampler=batch_sampler)
    except (CheckpointError, ConfigError, FileExistsError, FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        cleanup_distributed()
    if result.interrupted:
        return 130
    if dist_info.is_main:
        best = f"; best val CER {result.best_cer:.4f} at step {result.best_step}" if result.best_cer is not None else ""
        log.info("done: step %d, epoch %d%s; checkpoints in %s", result.step, result.epoch, best, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
