"""The GAN's configuration: defaults here, overrides from configs/gan/*.toml."""
from __future__ import annotations

import os

from ..config import load_config, merge

DEFAULTS: dict = {
    "data": {
        "height": 32,          # image height of G's output and of the real words fed to D and R
        "px_per_char": 16,     # G's canonical width per character; real words are resized to it
        "min_length": 1,
        "max_length": 12,
        "num_workers": 0,
    },
    "generator": {
        "base": 16, "channel_mult": [8, 4, 2], "z_dim": 32, "embed_dim": 64,
        "text_hidden": 64, "text_layers": 1,
    },
    "discriminator": {"base": 16, "channel_mult": [1, 2, 4, 8]},
    "recognizer": {
        # R: a recognizer.model CRNN trained on real words only. `config` names its TOML;
        # `checkpoint` optionally starts it from a trained word recognizer.
        "config": "configs/recognizer/tiny.toml",
        "checkpoint": "",
        "lr": 2e-4,
    },
    "train": {
        "batch_size": 16,
        "max_steps": 2000,
        "lr_g": 2e-4, "lr_d": 2e-4, "betas": [0.0, 0.999],
        "lookahead": False, "lookahead_k": 5, "lookahead_alpha": 0.5,
        "alpha": 1.0,          # CTC gradient std relative to the adversarial one (Alonso et al.)
        "d_steps": 1,
        "ema_decay": 0.999,
        "diffaugment": ["translation", "cutout", "color"],
        "seed": 0,
        "log_every": 10,
        "sample_every": 200,
        "checkpoint_every": 200,
        # Also keep OUT/step%07d.pt every this many steps (0: only last.pt), so the quality of
        # a run can be measured along the way (the convergence table in the README).
        "keep_every": 0,
    },
}


def load_gan_config(path: str | os.PathLike | None = None) -> dict:
    return merge(DEFAULTS, load_config(path) if path else {}, where=str(path or "gan config"))
