"""LmdbWordDataset: a torch Dataset over an LMDB in this project's (standard-compatible) layout."""
from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Collection
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..alphabet import Alphabet, normalize_text
from ..images import decode_image, pad_batch, resize_to_height, to_tensor
from .lmdb_format import image_key, label_key, open_shared, read_meta, read_num_samples, writer_key

log = logging.getLogger(__name__)

DEFAULT_HEIGHT = 64


class WordSample(NamedTuple):
    """What every dataset of this project yields (real or synthetic)."""
    image: torch.Tensor  # float32 (1, H, W), ink = 1, background = 0 (see htr_augment.images)
    text: str
    writer: str


class LmdbWordDataset(Dataset):
    """Samples of an LMDB, normalised to a fixed height.

    The dataset holds no LMDB handle: each process opens the LMDB once, read-only and
    without locking (lmdb_format.open_shared), so the dataset pickles and works with
    DataLoader workers under fork or spawn.

    Args:
        path: LMDB directory.
        height: image height in pixels; default: the LMDB's build height, else 64.
        alphabet: keep only samples whose labels it covers (default: the LMDB's own).
        min_length, max_length: keep labels of this many characters.
        writers: keep only these writer ids.
        transform: applied to the uint8 grayscale array (after resizing), e.g. augmentation.
    Samples left out are counted in `dropped` (reason -> count) and logged, never silently.
    """

    def __init__(self, path: str | os.PathLike, height: int | None = None, alphabet: Alphabet | None = None,
                 min_length: int = 1, max_length: int | None = None, writers: Collection[str] | None = None,
                 transform: Callable[[np.ndarray], np.ndarray] | None = None):
        self.path = str(path)
        self.transform = transform
        with open_shared(self.path).begin() as txn:
            n = read_num_samples(txn, self.path)
            self.meta = read_meta(txn)
            labels, ids = [], []
            for i in range(1, n + 1):
                raw = txn.get(label_key(i))
                if raw is None:
                    raise ValueError(f"{self.path}: num-samples is {n} but {label_key(i).decode()} is missing")
                labels.append(normalize_text(raw.decode("utf-8")))
                w = txn.get(writer_key(i))
                ids.append(w.decode("utf-8") if w is not None else "")
        self.height = height or self.meta.get("image_height") or DEFAULT_HEIGHT
        if alphabet is None:
            chars = self.meta.get("alphabet")
            alphabet = Alphabet(chars) if chars is not None else Alphabet.from_labels(labels)
        self.alphabet = alphabet
        wanted = set(writers) if writers is not None else None
        self.dropped: Counter = Counter()
        self._index: list[int] = []
        self.texts: list[str] = []
        self.writers: list[str] = []
        for i, (label, w) in enumerate(zip(labels, ids), 1):
            if wanted is not None and w not in wanted:
                continue  # a selection, not a loss: not counted as dropped
            if len(label) < min_length:
                self.dropped["shorter than min_length"] += 1
            elif max_length is not None and len(label) > max_length:
                self.dropped["longer than max_length"] += 1
            elif alphabet.missing(label):
                self.dropped["character outside alphabet"] += 1
            else:
                self._index.append(i)
                self.texts.append(label)
                self.writers.append(w)
        if self.dropped:
            log.warning("%s: dropped %d of %d samples (%s)", self.path, sum(self.dropped.values()), n,
                        ", ".join(f"{k}: {v}" for k, v in self.dropped.items()))

    def __len__(self) -> int:
        return len(self._index)

    def raw_image(self, idx: int) -> bytes:
        """The stored (encoded) image bytes of item `idx`."""
        with open_shared(self.path).begin() as txn:
            return txn.get(image_key(self._index[idx]))

    def __getitem__(self, idx: int) -> WordSample:
        if idx < 0:
            idx += len(self)
        img = resize_to_height(decode_image(self.raw_image(idx), f"{self.path}#{self._index[idx]}"), self.height)
        if self.transform is not None:
            img = self.transform(img)
        return WordSample(to_tensor(img, self.height), self.texts[idx], self.writers[idx])


class CTCCollate:
    """Collate WordSamples into a padded batch with CTC targets.

    Returns a dict: images (B, 1, H, W_max), widths (B,), targets (sum of lengths,),
    target_lengths (B,), texts, writers. Picklable, for DataLoader workers."""

    def __init__(self, alphabet: Alphabet, width_multiple: int = 1):
        self.alphabet = alphabet
        self.width_multiple = width_multiple

    def __call__(self, samples: list[WordSample]) -> dict:
        images, widths = pad_batch([s.image for s in samples], self.width_multiple)
        encoded = [self.alphabet.encode(s.text, sample=f"{s.writer}:{s.text}") for s in samples]
        return {
            "images": images,
            "widths": widths,
            "targets": torch.tensor([c for e in encoded for c in e], dtype=torch.long),
            "target_lengths": torch.tensor([len(e) for e in encoded], dtype=torch.long),
            "texts": [s.text for s in samples],
            "writers": [s.writer for s in samples],
        }
