"""The one checkpoint format of the project, written atomically, read with weights_only=True.

A checkpoint is a plain dict (nothing that needs unpickling beyond tensors and builtins):

    format      CHECKPOINT_FORMAT (int)
    kind        "recognizer" | "gan"
    config      the merged config dict the run used
    alphabet    list of characters (index i+1 = class i+1; 0 is the CTC blank)
    step        optimizer steps taken
    epoch       current epoch (0-based)
    batch_in_epoch  batches of `epoch` already consumed (exact mid-epoch resume)
    models      {name: state_dict}       e.g. {"recognizer": ...} or {"generator": ..., ...}
    optimizers  {name: state_dict}
    schedulers  {name: state_dict}
    rng         [per-rank seeding.rng_state()] (index = rank)
    extra       {str: builtins}          e.g. {"best_cer": 0.12}
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..alphabet import Alphabet

CHECKPOINT_FORMAT = 1
KINDS = ("recognizer", "gan")
REQUIRED_KEYS = ("format", "kind", "config", "alphabet", "step", "epoch", "models")


class CheckpointError(ValueError):
    """A checkpoint is unreadable, of another kind, or does not fit the current run."""


def make_checkpoint(kind: str, config: dict, alphabet: Alphabet | Sequence[str], step: int, epoch: int, *,
                    batch_in_epoch: int = 0, models: dict[str, dict], optimizers: dict[str, dict] | None = None,
                    schedulers: dict[str, dict] | None = None, rng: list[dict] | None = None,
                    extra: dict[str, Any] | None = None) -> dict:
    if kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, got {kind!r}")
    chars = alphabet.chars if isinstance(alphabet, Alphabet) else list(alphabet)
    return {
        "format": CHECKPOINT_FORMAT, "kind": kind, "config": config, "alphabet": list(chars),
        "step": int(step), "epoch": int(epoch), "batch_in_epoch": int(batch_in_epoch),
        "models": models, "optimizers": optimizers or {}, "schedulers": schedulers or {},
        "rng": rng or [], "extra": extra or {},
    }


def save_checkpoint(checkpoint: dict, path: str | os.PathLike) -> Path:
    """Write to `path.tmp`, flush to disk, then rename over `path`: a crash never leaves a torn file."""
    missing = [k for k in REQUIRED_KEYS if k not in checkpoint]
    if missing:
        raise ValueError(f"not a checkpoint dict: missing {missing} (build it with make_checkpoint)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    kind: str | None = None) -> dict:
    """Read a checkpoint with `weights_only=True` (no arbitrary code runs) and check its kind."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path}: not an htr-augment checkpoint (expected keys {list(REQUIRED_KEYS)})")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {ckpt['format']}, this code reads {CHECKPOINT_FORMAT}")
    if kind is not None and ckpt["kind"] != kind:
        raise CheckpointError(f"{path}: a {ckpt['kind']!r} checkpoint, expected {kind!r}")
    return ckpt


def check_alphabet(checkpoint_chars: Sequence[str], alphabet: Alphabet, what: str = "checkpoint") -> None:
    """Refuse to continue with a dataset whose alphabet maps classes differently."""
    saved = list(checkpoint_chars)
    if saved == alphabet.chars:
        return
    only_saved = [c for c in saved if c not in alphabet]
    only_new = [c for c in alphabet.chars if c not in set(saved)]
    detail = []
    if only_new:
        detail.append(f"dataset has {''.join(only_new)!r} which the {what} lacks")
    if only_saved:
        detail.append(f"{what} has {''.join(only_saved)!r} which the dataset lacks")
    if not detail:
        detail.append("same characters in another order")
    raise CheckpointError(f"the {what}'s alphabet ({len(saved)} chars) differs from the dataset's "
                          f"({len(alphabet.chars)} chars): {'; '.join(detail)}. Class indices would not "
                          f"match; pass the {what}'s alphabet to the dataset (e.g. --alphabet) or start a new run.")


def file_sha256(path: str | os.PathLike) -> str:
    """A checkpoint's identity by content (reports record which weights they used)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
