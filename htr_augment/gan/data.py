"""Real words for the GAN, in G's canonical geometry, and the texts G is asked to write."""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from ..alphabet import Alphabet
from ..data.dataset import WordSample
from ..images import pad_batch


def encode_texts(texts: list[str], alphabet: Alphabet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> tokens (B, L_max) padded with 0, lengths (B,), flat CTC targets."""
    encoded = [alphabet.encode(t, sample=f"text to generate {t!r}") for t in texts]
    lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
    tokens = torch.zeros(len(texts), int(lengths.max()), dtype=torch.long)
    for i, e in enumerate(encoded):
        tokens[i, : len(e)] = torch.tensor(e)
    return tokens, lengths, torch.tensor([c for e in encoded for c in e], dtype=torch.long)


class CanonicalCollate:
    """Resize each real word to `px_per_char` pixels per character (G's geometry), then pad.

    D compares real and generated words at the same character density, so it cannot
    tell them apart by width alone. Returns images in ink space (ink = 1), like CTCCollate."""

    def __init__(self, alphabet: Alphabet, px_per_char: int):
        self.alphabet = alphabet
        self.px_per_char = px_per_char

    def __call__(self, samples: list[WordSample]) -> dict:
        images = []
        for s in samples:
            w = self.px_per_char * len(s.text)
            images.append(F.interpolate(s.image[None], size=(s.image.shape[1], w), mode="bilinear",
                                        align_corners=False, antialias=True)[0])
        batch, widths = pad_batch(images)
        tokens, lengths, targets = encode_texts([s.text for s in samples], self.alphabet)
        return {"images": batch, "widths": widths, "targets": targets, "target_lengths": lengths,
                "texts": [s.text for s in samples], "writers": [s.writer for s in samples]}


def has_capital(text: str) -> bool:
    """Whether `text` holds an upper-case letter (the GAN's weak spot: TextSampler, gan.evaluate)."""
    return any(ch.isupper() for ch in text)


class TextSampler:
    """Words for G to write: drawn from a lexicon with a generator seeded per step, so a
    resumed run asks for exactly the words an uninterrupted one would have.

    caps_share: the fraction of draws taken from the lexicon's words with a capital letter
    (0: draw from the whole lexicon, as it comes). Capitals are rare in running text (5.5% of the
    Copiste training words' characters), so G writes them as small letters; a recognizer's
    lexicon (titles, names) can hold far more of them."""

    def __init__(self, lexicon: list[str], seed: int, rank: int = 0, caps_share: float = 0.0):
        if not lexicon:
            raise ValueError("the lexicon of words to generate is empty")
        if not 0.0 <= caps_share <= 1.0:
            raise ValueError(f"train.text_caps_share must be in [0, 1], got {caps_share}")
        self.lexicon = lexicon
        self.seed, self.rank = seed, rank
        self.capitalized = [w for w in lexicon if has_capital(w)]
        self.caps_share = caps_share if self.capitalized else 0.0

    def draw(self, step: int, n: int) -> list[str]:
        rng = random.Random(f"{self.seed}:{self.rank}:{step}")
        if not self.caps_share:  # the original stream, so that runs from before the option resume exactly
            return [rng.choice(self.lexicon) for _ in range(n)]
        return [rng.choice(self.capitalized if rng.random() < self.caps_share else self.lexicon) for _ in range(n)]


def px_per_char(dataset, limit: int = 3000, min_words: int = 5) -> tuple[float, list[float]]:
    """Widths per character of the real words at the dataset's height, over up to `limit` words
    sampled evenly (decoded once): the mean over all of them, and each writer's mean, sorted
    (writers with fewer than `min_words` of the sampled words left out; empty when the dataset
    has no writer ids). Writers differ in width per character, not only in slant:
    WordGenerator gives each style one of the writers' widths."""
    n = len(dataset)
    ids = getattr(dataset, "writers", None) or [""] * n  # the dataset's writer ids, read without decoding
    widths = chars = 0
    per_writer: dict[str, list[float]] = {}
    for i in range(0, n, max(1, n // limit)):
        s = dataset[i]
        widths += s.image.shape[-1]
        chars += len(s.text)
        if ids[i]:
            acc = per_writer.setdefault(ids[i], [0.0, 0.0, 0])
            acc[0] += s.image.shape[-1]
            acc[1] += len(s.text)
            acc[2] += 1
    writers = sorted(w / c for w, c, k in per_writer.values() if k >= min_words and c > 0)
    return widths / max(1, chars), writers


def writer_px_per_char(dataset, limit: int = 3000, min_words: int = 5) -> list[float]:
    """Each writer's mean width per character (px_per_char's second part)."""
    return px_per_char(dataset, limit, min_words)[1]
