"""Recognizer config: the defaults (one dict), and TOML files merged over them.

Every key a config file may set is here; htr_augment.config.merge rejects others.
TOML has no null, so "no limit" is written 0.
"""
from __future__ import annotations

import os
from typing import Any

from htr_augment.config import ConfigError, load_config, merge

DEFAULTS: dict[str, Any] = {
    "data": {
        "height": 64,          # images are resized to this height (width keeps the aspect ratio)
        "min_length": 1,       # training labels shorter/longer than this are dropped (and counted)
        "max_length": 0,       # 0: no limit
    },
    "model": {
        # Retsinas et al. 2022: 7x7 stem, residual stages with max-pool between them,
        # column max-pool over the remaining height, BiLSTM head + 1-D conv CTC shortcut.
        "stem_channels": 32,
        "stem_kernel": 7,
        "stem_stride": [2, 2],                       # (height, width)
        "stages": [[2, 64], [4, 128], [4, 256]],     # (residual blocks, channels) per stage
        "pools": [[2, 2], [2, 1]],                   # max-pool (height, width) after each stage but the last
        "lstm_hidden": 256,
        "lstm_layers": 3,
        "dropout": 0.2,
        "shortcut": True,                            # auxiliary CTC head on the CNN features
    },
    "train": {
        "batch_size": 16,
        "eval_batch_size": 32,
        "lr": 1e-3,
        "weight_decay": 5e-5,
        "epochs": 100,
        "max_steps": 0,               # > 0 overrides epochs
        "schedule": "cosine",         # "cosine" (to min_lr_ratio * lr) or "step" (x gamma at milestones)
        "warmup_steps": 200,          # linear warm-up, both schedules
        "min_lr_ratio": 0.01,
        "milestones": [0.5, 0.75],    # fractions of the total steps, for "step"
        "gamma": 0.1,
        "grad_clip": 5.0,             # max global gradient norm; 0: no clipping
        "shortcut_weight": 0.1,       # weight of the shortcut head's CTC loss
        "amp": "none",                # "bf16": autocast on CUDA (CTC stays float32)
        "num_workers": 2,
        "eval_every": 0,              # steps between validations; 0: at the end of each epoch
        "checkpoint_every": 500,      # steps between last.pt writes (also at each epoch end and at the end)
        "log_every": 20,              # steps between logged training scalars
        "log_samples": 4,             # validation images + predictions shown in TensorBoard
        "seed": 1,
    },
    "augment": {
        "enabled": True,
        "p_affine": 0.5,
        "shear": 0.3,                 # max |horizontal shear| (dx per dy)
        "scale": [0.85, 1.1],         # horizontal scale range (the height stays fixed)
        "rotate": 1.5,                # max |rotation| in degrees
        "p_distort": 0.3,
        "distort_cells": 6,           # control points per image height of the smooth random distortion
        "distort_magnitude": 0.04,    # max displacement as a fraction of the height
        "p_morph": 0.3,               # erosion or dilation (thicker or thinner strokes)
        "morph_max_kernel": 3,
        "p_contrast": 0.5,
        "contrast": [0.5, 1.2],       # ink contrast against the background
        "brightness": [-0.1, 0.1],    # background shift, fraction of 255
    },
}

SCHEDULES = ("cosine", "step")
AMP = ("none", "bf16")


def make_config(overrides: dict[str, Any] | None = None, where: str = "config") -> dict[str, Any]:
    """DEFAULTS with `overrides` merged over them, checked."""
    config = merge(DEFAULTS, overrides or {}, where)
    validate(config, where)
    return config


def load_recognizer_config(path: str | os.PathLike) -> dict[str, Any]:
    return make_config(load_config(path), str(path))


def horizontal_stride(model_config: dict[str, Any]) -> int:
    """Input columns per output frame."""
    stride = int(model_config["stem_stride"][1])
    for _, w in model_config["pools"]:
        stride *= int(w)
    return stride


def validate(config: dict[str, Any], where: str = "config") -> None:
    def fail(msg: str):
        raise ConfigError(f"{where}: {msg}")

    m, t, d = config["model"], config["train"], config["data"]
    if not m["stages"] or any(len(s) != 2 or min(s) < 1 for s in m["stages"]):
        fail("model.stages must be a non-empty list of [blocks, channels] with positive entries")
    if len(m["pools"]) != len(m["stages"]) - 1 or any(len(p) != 2 or min(p) < 1 for p in m["pools"]):
        fail(f"model.pools needs {len(m['stages']) - 1} [height, width] entries (one between stages)")
    if len(m["stem_stride"]) != 2 or min(m["stem_stride"]) < 1 or m["stem_kernel"] < 1:
        fail("model.stem_stride must be [height, width] >= 1 and stem_kernel >= 1")
    vertical = m["stem_stride"][0]
    for h, _ in m["pools"]:
        vertical *= h
    if d["height"] < vertical:
        fail(f"data.height {d['height']} is smaller than the model's vertical down-sampling {vertical}")
    if t["schedule"] not in SCHEDULES:
        fail(f"train.schedule must be one of {SCHEDULES}, got {t['schedule']!r}")
    if t["amp"] not in AMP:
        fail(f"train.amp must be one of {AMP}, got {t['amp']!r}")
    if t["batch_size"] < 1 or t["eval_batch_size"] < 1:
        fail("train.batch_size and train.eval_batch_size must be positive")
    if t["max_steps"] <= 0 and t["epochs"] <= 0:
        fail("set train.epochs or train.max_steps")
    if not all(0 < x < 1 for x in t["milestones"]):
        fail("train.milestones are fractions of the total steps, each in (0, 1)")
