"""Train on synthetic, test on real (TSTR): how useful generated words are as training data.

A fixed small recognizer (configs/recognizer/tstr.toml) is trained from scratch, by
recognizer.train.train, on the words of one source only, then greedy-decoded on real
words of unseen writers:
  - real: N real training words, the reference (what the same budget buys with real data);
  - gan: the same N labels written by the generator, a new style z per word;
  - fonts: the same N labels rendered in handwriting fonts, a new font style per word.
Labels, sample count, alphabet (the generator's), steps and seed are the same for every
source, so a source's CER above the real row is the cost of training on it instead of
real handwriting. Everything is a function of the seed.

    from htr_augment.gan.tstr import run_tstr
    result = run_tstr(gen, "data/words/train.lmdb", "data/words/val.lmdb", steps=1500)
    result["gan"]  # {"cer": ..., "wer": ..., "steps": 1500, "samples": 8000}
"""
from __future__ import annotations

import os
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from ..alphabet import Alphabet
from ..data import LmdbWordDataset
from ..data.dataset import WordSample
from ..fonts import FontRenderer
from ..images import resize_to_height, to_tensor, to_uint8
from .word_generator import WordGenerator

SOURCES = ("real", "gan", "fonts")
REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "configs" / "recognizer" / "tstr.toml"
DEFAULT_STEPS = 1500  # what tstr.toml is sized for (documented in the evaluate CLI's --help)
DEFAULT_SAMPLES = 8000


class WordImages(Dataset):
    """Words held in memory as uint8 arrays (a quarter of float32), yielding WordSample.

    Generated once and read every epoch: the trainer shuffles, and regenerating GAN
    words in random order would cost one generator pass per item."""

    def __init__(self, images: list[np.ndarray], texts: list[str], writers: list[str]):
        if not len(images) == len(texts) == len(writers):
            raise ValueError(f"{len(images)} images, {len(texts)} texts and {len(writers)} writers")
        self.images, self.texts, self.writers = images, texts, writers

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> WordSample:
        return WordSample(to_tensor(self.images[i]), self.texts[i], self.writers[i])


def _bar(total: int, desc: str, progress: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="word", dynamic_ncols=True, disable=not progress)


def real_words(path: str | os.PathLike, alphabet: Alphabet, config: dict, n: int, seed: int,
               progress: bool = True) -> WordImages:
    """n real words drawn (by seed) from the LMDB at `path`, among those the alphabet can write."""
    d = config["data"]
    ds = LmdbWordDataset(path, height=d["height"], alphabet=alphabet, min_length=d["min_length"],
                         max_length=d["max_length"] or None)
    if not len(ds):
        raise ValueError(f"{path}: no training word fits the generator's alphabet "
                         f"{''.join(alphabet.chars)!r} and data.max_length {d['max_length']}")
    idx = sorted(random.Random(seed).sample(range(len(ds)), min(n, len(ds))))
    images = []
    with _bar(len(idx), "TSTR: reading real words", progress) as bar:
        for i in idx:
            images.append(to_uint8(ds[i].image))
            bar.update(1)
    return WordImages(images, [ds.texts[i] for i in idx], [ds.writers[i] for i in idx])


def gan_words(gen: WordGenerator, texts: list[str], height: int, seed: int, progress: bool = True,
              chunk: int = 16) -> WordImages:
    """`texts` written by the generator, each in its own style (a new z per word).

    Small chunks: a batch is padded to its longest word, so on a CPU 16 words at a time
    run faster than 64 and peak at a fraction of the memory (in eval mode a word does not
    depend on its batch, so the chunk size does not change the images)."""
    z = gen.sample_z(len(texts), seed)
    images: list[np.ndarray] = []
    with _bar(len(texts), "TSTR: generating GAN words", progress) as bar:
        for s in range(0, len(texts), chunk):
            batch = gen.generate(texts[s:s + chunk], z=z[s:s + chunk])
            images += [resize_to_height(to_uint8(im), height) for im in batch]
            bar.update(len(batch))
    return WordImages(images, list(texts), [f"gan:{seed}:{i}" for i in range(len(texts))])


def font_words(texts: list[str], height: int, seed: int, progress: bool = True) -> WordImages:
    """`texts` rendered in handwriting fonts, each in its own style (font, size, stroke).

    FontRenderer (what FontWordDataset draws with) is called per label so that the fonts
    source gets exactly the real source's labels, not a random draw from them."""
    renderer = FontRenderer(height, seed=seed)
    images = []
    with _bar(len(texts), "TSTR: rendering font words", progress) as bar:
        for i, t in enumerate(texts):
            images.append(renderer.render_array(t, style=i))
            bar.update(1)
    return WordImages(images, list(texts), [f"font:{i}" for i in range(len(texts))])


def train_and_test(config: dict, words: Dataset, test: Dataset, alphabet: Alphabet, *, steps: int,
                   device: str | None = "cpu", progress: bool = True) -> dict:
    """Train the config's recognizer from scratch on `words` for `steps` steps, then its
    greedy CER/WER on `test` (the last weights: selecting on the test set would flatter it)."""
    from recognizer.train import evaluate, train

    # The run's checkpoints are not part of the result; the evaluate CLI disables gradients.
    with tempfile.TemporaryDirectory(prefix="tstr-") as tmp, torch.enable_grad():
        result = train(config, words, None, tmp, alphabet=alphabet, device=device, max_steps=steps,
                       progress=progress)
    if result.interrupted:
        raise KeyboardInterrupt
    model_device = next(result.model.parameters()).device
    counts, _ = evaluate(result.model, test, alphabet, batch_size=config["train"]["eval_batch_size"],
                         device=model_device)
    return {"cer": counts.cer, "wer": counts.wer, "steps": result.step, "samples": len(words)}


def _shown(path: str | os.PathLike) -> str:
    """A config path as the report shows it: relative to the repository when inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(path)


def run_tstr(gen: WordGenerator, real_train: str | os.PathLike, real_test: str | os.PathLike, *, steps: int,
             samples: int = DEFAULT_SAMPLES, seed: int = 0, config: str | os.PathLike = DEFAULT_CONFIG,
             device: str | None = "cpu", progress: bool = True) -> dict:
    """TSTR for the three sources; returns {"real"|"gan"|"fonts": {cer, wer, steps, samples}, ...}.

    real_train: LMDB of real training words (their labels are every source's labels).
    real_test: LMDB of real words of writers unseen in real_train (and by the GAN).
    """
    from recognizer.config import load_recognizer_config

    if steps < 1 or samples < 1:
        raise ValueError(f"TSTR needs positive steps and samples, got {steps} and {samples}")
    if not Path(config).is_file():
        raise FileNotFoundError(f"TSTR recognizer config {config} not found")
    cfg = load_recognizer_config(config)
    cfg["train"]["seed"] = seed
    height = cfg["data"]["height"]
    alphabet = gen.alphabet  # every source can write every training label
    test = LmdbWordDataset(real_test, height=height, alphabet=alphabet)
    if not len(test):
        raise ValueError(f"{real_test}: no test word fits the generator's alphabet")
    real = real_words(real_train, alphabet, cfg, samples, seed, progress)
    make = {"real": lambda: real,
            "gan": lambda: gan_words(gen, real.texts, height, seed, progress),
            "fonts": lambda: font_words(real.texts, height, seed, progress)}
    out: dict = {"config": _shown(config), "seed": seed, "real_train": str(real_train),
                 "real_test": str(real_test), "test_words": len(test)}
    for k, src in enumerate(SOURCES, 1):
        words = make[src]()  # one source in memory at a time
        if progress:
            print(f"TSTR {k}/{len(SOURCES)}: training on {len(words)} {src} words for {steps} steps",
                  file=sys.stderr)
        out[src] = train_and_test(cfg, words, test, alphabet, steps=steps, device=device, progress=progress)
    return out
