"""Quality metrics of generated words, computed in an independent recognizer's terms.

- text fidelity: CER/WER of that recognizer on the words (in- and out-of-vocabulary);
- Fréchet distance between real and generated words in its feature space
  (recognizer.model.CRNN.features; no network pretrained elsewhere can be used here);
- diversity: mean pairwise feature distance between renderings of the same word;
- ink: how dark the strokes are and how much grey lies around them (no recognizer needed).
"""
from __future__ import annotations

import itertools
import os

import numpy as np
import torch

from ..images import otsu_ink, pad_batch, resize_to_height, to_tensor, to_uint8
from ..metrics import cer


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (N, D) and b (M, D).

    Tr(sqrt(Sa Sb)) is computed as the sum of square roots of the eigenvalues of the
    symmetric matrix sqrt(Sa) Sb sqrt(Sa), which is stable without scipy."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = sqrt_a @ cov_b @ sqrt_a
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt)


def ink_profile(images: list[torch.Tensor]) -> dict:
    """Ink of (1, H, W) ink-space words (ink = 1): `stroke`, the mean ink of the pixels an Otsu
    threshold of each word calls ink (how dark the pen writes); `haze`, the 90th percentile of the
    ink of all other pixels (grey around the strokes and on the paper). images.otsu_ink, not
    images.ink_mask: its ruled-line filter takes rows of bold, tightly set letters for a rule."""
    strokes, rest = [], []
    for im in images:
        ink = im[0].float().clamp(0, 1).numpy()
        mask = otsu_ink(to_uint8(im))
        strokes.append(ink[mask])
        rest.append(ink[~mask])
    strokes, rest = np.concatenate(strokes), np.concatenate(rest)
    return {"stroke": float(strokes.mean()) if strokes.size else 0.0,
            "haze": float(np.percentile(rest, 90)) if rest.size else 0.0}


def mean_pairwise_distance(groups: list[np.ndarray]) -> float:
    """Mean L2 distance between members of each group (renderings of one word), over groups."""
    dists = [float(np.linalg.norm(x - y)) for g in groups if len(g) > 1 for x, y in itertools.combinations(g, 2)]
    return float(np.mean(dists)) if dists else float("nan")


@torch.no_grad()
def recognize(model, alphabet, images: list[torch.Tensor], batch_size: int = 32, device="cpu", features: bool = True):
    """Greedy transcriptions and features (B, D; empty with features=False) of (1, H, W) ink-space images."""
    from recognizer.decoding import greedy_decode
    texts, feats = [], []
    for i in range(0, len(images), batch_size):
        batch, widths = pad_batch(images[i:i + batch_size], model.stride)
        batch, widths = batch.to(device), widths.to(device)
        out = model(batch, widths)
        texts += greedy_decode(out.log_probs, out.lengths, alphabet)
        if features:
            feats.append(model.features(batch, widths).float().cpu())
    return texts, torch.cat(feats).numpy() if feats else np.zeros((0, 0))


def at_height(img: torch.Tensor, height: int) -> torch.Tensor:
    return img if img.shape[1] == height else to_tensor(resize_to_height(to_uint8(img), height))


def load_reader(legible_by, max_cer: float, tries: int):
    """(reader, max_cer, tries) of a synthetic dataset's legibility filter (SyntheticWordDataset,
    FontWordDataset): None for no filter; a shipped name or checkpoint path becomes a Reader; any
    other callable (list of images -> list of texts) is used as it is."""
    if legible_by is None:
        return None, max_cer, 1
    if not 0.0 <= max_cer < 1.0:
        raise ValueError(f"max_cer must be in [0, 1), got {max_cer}")
    if int(tries) < 1:
        raise ValueError(f"tries must be at least 1, got {tries}")
    if not isinstance(legible_by, (str, os.PathLike)):
        return legible_by, float(max_cer), int(tries)
    return Reader(legible_by), float(max_cer), int(tries)


def pick_legible(texts: list[str], images: list, reader, redraw, max_cer: float, tries: int) -> tuple[list, list[int]]:
    """The legibility filter of the synthetic datasets: for each text, the first of up to `tries`
    renderings that `reader` reads within `max_cer` CER, else the one it reads best (the first of
    those). `images` are attempt 0; `redraw(attempt, todo)` renders that attempt of the items at
    indices `todo`. Returns the kept images and the attempt each came from."""
    best = [cer([t], [h]) for t, h in zip(texts, reader(images))]
    images, chosen = list(images), [0] * len(texts)
    for attempt in range(1, tries):
        todo = [k for k, c in enumerate(best) if c > max_cer]
        if not todo:
            break
        again = redraw(attempt, todo)
        for k, img, hyp in zip(todo, again, reader(again)):
            c = cer([texts[k]], [hyp])
            if c < best[k]:
                best[k], images[k], chosen[k] = c, img, attempt
    return images, chosen


class Reader:
    """Greedy transcriptions of word images by a recognizer: a shipped name (`copiste-words`) or a
    checkpoint of `python -m recognizer.train`, loaded once per process (DataLoader workers reload
    it from the path instead of unpickling weights). Images of any height are read at the model's."""

    def __init__(self, recognizer: str | os.PathLike, device: str = "cpu", batch_size: int = 64):
        from recognizer.pretrained import resolve
        self.name, self.path = str(recognizer), resolve(recognizer)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no recognizer checkpoint there")
        self.device, self.batch_size = device, batch_size
        self._model = None

    def _load(self):
        if self._model is None:
            from recognizer.model import load_recognizer
            model, self.alphabet, config = load_recognizer(self.path, self.device)
            self._model, self.height = model.eval(), config["data"]["height"]
        return self._model

    @torch.no_grad()
    def __call__(self, images: list[torch.Tensor]) -> list[str]:
        model = self._load()
        images = [at_height(im, self.height) for im in images]
        return recognize(model, self.alphabet, images, self.batch_size, self.device, features=False)[0]

    def __getstate__(self):
        return {**self.__dict__, "_model": None}
