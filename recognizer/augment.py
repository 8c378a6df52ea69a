"""HTR training augmentations on uint8 grayscale images (dark ink on a light background).

`Augmenter` is a picklable callable `img -> img` keeping the height: random affine
(horizontal shear and scale, small rotation), a smooth random distortion, erosion or
dilation (thicker or thinner strokes), and ink contrast / brightness changes. It can
be an LmdbWordDataset `transform`, where it draws from a NumPy generator seeded once
per DataLoader worker from `torch.initial_seed()`.

`AugmentedDataset` instead derives a generator from (seed, epoch, sample index): the
same sample in the same epoch is augmented the same way whatever the number of workers,
which lets a resumed training run continue exactly.
"""
from __future__ import annotations

import math
import os
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from htr_augment.config import merge
from htr_augment.images import to_tensor, to_uint8

from .config import DEFAULTS

WHITE = 255


class Augmenter:
    def __init__(self, config: dict[str, Any] | None = None):
        """`config`: the [augment] table (missing keys take the defaults)."""
        self.config = merge(DEFAULTS["augment"], config or {}, "augment")
        self._rng: np.random.Generator | None = None
        self._rng_key: tuple[int, int] | None = None

    def __call__(self, img: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 2:
            raise ValueError(f"Augmenter expects a uint8 grayscale (H, W) array, got {img.dtype} {img.shape}")
        c = self.config
        if not c["enabled"]:
            return img
        rng = rng if rng is not None else self._worker_rng()
        if rng.random() < c["p_affine"]:
            img = random_affine(img, rng, c["shear"], c["scale"], c["rotate"])
        if rng.random() < c["p_distort"]:
            img = random_distortion(img, rng, c["distort_cells"], c["distort_magnitude"])
        if rng.random() < c["p_morph"] and c["morph_max_kernel"] >= 2:
            img = random_morphology(img, rng, c["morph_max_kernel"])
        if rng.random() < c["p_contrast"]:
            img = random_contrast(img, rng, c["contrast"], c["brightness"])
        return img

    def _worker_rng(self) -> np.random.Generator:
        # torch.initial_seed() differs per DataLoader worker (base seed + worker id) and per epoch.
        key = (os.getpid(), torch.initial_seed())
        if self._rng_key != key:
            self._rng = np.random.default_rng(torch.initial_seed())
            self._rng_key = key
        return self._rng

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_rng"] = state["_rng_key"] = None  # each process seeds its own
        return state

    def __repr__(self) -> str:
        return f"Augmenter({self.config})"


def random_affine(img: np.ndarray, rng: np.random.Generator, shear: float, scale: tuple[float, float],
                  rotate_deg: float) -> np.ndarray:
    """Shear, stretch horizontally and rotate; the canvas grows to keep all ink, then the
    result is resized back to the input height."""
    h, w = img.shape
    s = rng.uniform(-shear, shear)
    sx = rng.uniform(*scale)
    a = math.radians(rng.uniform(-rotate_deg, rotate_deg))
    # Rotation @ shear @ horizontal scale, about the origin; translated into view below.
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    lin = rot @ np.array([[1.0, s], [0.0, 1.0]]) @ np.array([[sx, 0.0], [0.0, 1.0]])
    corners = lin @ np.array([[0, w, 0, w], [0, 0, h, h]], dtype=np.float64)
    lo, hi = corners.min(axis=1), corners.max(axis=1)
    out_w, out_h = max(1, math.ceil(hi[0] - lo[0])), max(1, math.ceil(hi[1] - lo[1]))
    m = np.hstack([lin, -lo[:, None]])
    out = cv2.warpAffine(img, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=WHITE)
    if out_h != h:
        out = cv2.resize(out, (max(1, round(out_w * h / out_h)), h), interpolation=cv2.INTER_AREA)
    return out


def random_distortion(img: np.ndarray, rng: np.random.Generator, cells: int, magnitude: float) -> np.ndarray:
    """Smooth elastic-like warp: random displacements on a coarse grid, interpolated bicubically."""
    h, w = img.shape
    rows = max(2, cells)
    cols = max(2, round(cells * w / h))
    amp = magnitude * h
    dx = rng.uniform(-amp, amp, (rows, cols)).astype(np.float32)
    dy = rng.uniform(-amp, amp, (rows, cols)).astype(np.float32)
    dx = cv2.resize(dx, (w, h), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(dy, (w, h), interpolation=cv2.INTER_CUBIC)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(img, gx + dx, gy + dy, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=WHITE)


def random_morphology(img: np.ndarray, rng: np.random.Generator, max_kernel: int) -> np.ndarray:
    """Erode (ink is dark: strokes get thicker) or dilate (thinner) with a k x k kernel."""
    k = int(rng.integers(2, max_kernel + 1))
    kernel = np.ones((k, k), np.uint8)
    return cv2.erode(img, kernel) if rng.random() < 0.5 else cv2.dilate(img, kernel)


def random_contrast(img: np.ndarray, rng: np.random.Generator, contrast: tuple[float, float],
                    brightness: tuple[float, float]) -> np.ndarray:
    """Scale the ink's darkness against the background, then shift all levels."""
    c = rng.uniform(*contrast)
    b = rng.uniform(*brightness) * WHITE
    out = WHITE - (WHITE - img.astype(np.float32)) * c + b
    return np.clip(out + 0.5, 0, WHITE).astype(np.uint8)


class AugmentedDataset(Dataset):
    """Any dataset of WordSamples, augmented with a generator seeded by (seed, epoch, index).

    Call `set_epoch` before iterating each epoch (the trainer does)."""

    def __init__(self, dataset: Dataset, augmenter: Augmenter, seed: int = 0):
        self.dataset = dataset
        self.augmenter = augmenter
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int):
        sample = self.dataset[idx]
        rng = np.random.default_rng([self.seed, self.epoch, idx])
        img = self.augmenter(to_uint8(sample.image), rng)
        return sample._replace(image=to_tensor(img, sample.image.shape[-2]))

    def __getattr__(self, name: str):
        # Expose the wrapped dataset's attributes (alphabet, texts, ...); not for private names,
        # which keeps pickling and copying from recursing before `dataset` is set.
        if name.startswith("_") or name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
