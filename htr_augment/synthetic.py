"""SyntheticWordDataset: generated handwritten words as a torch Dataset.

    from htr_augment import SyntheticWordDataset
    synth = SyntheticWordDataset(lexicon="words.txt", length=100_000, height=64, seed=0)
    image, text, writer = synth[0]      # exactly what LmdbWordDataset yields

Item i is a function of (seed, i): its text and its style z are drawn from generators
seeded with them, and the generator runs in eval mode, where a word does not depend
on the others in its batch. So item i is the same image in every epoch, worker and
process (unless resample=True: then a chunk is drawn anew once all its items were
served). Items are generated a chunk at a time (consecutive indices) and cached per
process, so reading a chunk in order costs one generator forward pass for
`chunk_size` words; MixingBatchSampler reads them that way.
"""
from __future__ import annotations

import logging
import os
import random
from collections import OrderedDict

import torch
from torch.utils.data import Dataset

from .data.dataset import WordSample
from .images import resize_to_height, to_tensor, to_uint8
from .lexicon import NgramSampler, load_lexicon, restrict

log = logging.getLogger(__name__)


class SyntheticWordDataset(Dataset):
    """Args:
        generator: a WordGenerator, a GAN checkpoint path, or None for the package's weights.
        lexicon: list of words, text file, LMDB (its labels) or an NgramSampler.
        length: the dataset's (virtual) length.
        seed: item i depends only on (seed, i).
        height: output height (default: the generator's); match your real data.
        resample: draw new text and style at every access instead.
        device: where the generator runs ("cuda" only with num_workers=0 or spawn workers).
        chunk_size: words generated per forward pass.
    """

    def __init__(self, generator=None, lexicon=None, length: int = 10_000, seed: int = 0,
                 height: int | None = None, resample: bool = False, device: str = "cpu",
                 chunk_size: int = 32, natural_width: bool = True, max_length: int | None = None):
        from .gan.word_generator import WordGenerator
        if length < 1:
            raise ValueError("length must be positive")
        self._gen_source = generator if isinstance(generator, (str, os.PathLike)) or generator is None else None
        self._gen: WordGenerator | None = generator if isinstance(generator, WordGenerator) else None
        gen = self.generator
        self.alphabet = gen.alphabet
        self.length, self.seed, self.resample = length, seed, resample
        self.height = height or gen.height
        self.device, self.chunk_size, self.natural_width = device, chunk_size, natural_width
        if isinstance(lexicon, NgramSampler):
            self.words, self.sampler = None, lexicon
            self.dropped = {}
        else:
            words = load_lexicon(lexicon if lexicon is not None else gen.info.get("lexicon", []))
            self.words, dropped = restrict(words, self.alphabet, max_length)
            self.sampler = None
            self.dropped = dict(dropped)
            if dropped:
                log.warning("lexicon: dropped %d of %d words (%s)", sum(dropped.values()), len(words),
                            ", ".join(f"{k}: {v}" for k, v in dropped.items()))
            if not self.words:
                raise ValueError("no word of the lexicon can be written with the generator's alphabet "
                                 f"{''.join(self.alphabet.chars)!r}")
        self._cache: OrderedDict[int, list[WordSample]] = OrderedDict()
        self._served: dict[int, set[int]] = {}
        self._draws = 0

    @property
    def generator(self):
        if self._gen is None:  # loaded lazily, once per process (workers included)
            from .gan.word_generator import WordGenerator
            self._gen = WordGenerator.load(self._gen_source, device=getattr(self, "device", "cpu"))
        return self._gen

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"], state["_served"] = OrderedDict(), {}
        if self._gen_source is not None or self._gen is None:
            state["_gen"] = None  # reload from the path in the worker instead of pickling weights
        return state

    def __len__(self) -> int:
        return self.length

    def text_and_style(self, i: int, draw: int = 0) -> tuple[str, torch.Tensor]:
        """The text and style vector of item i (of its `draw`-th resampling)."""
        key = f"{self.seed}:{i}:{draw}"
        rng = random.Random(key)
        text = self.sampler.sample(rng) if self.sampler is not None else rng.choice(self.words)
        z = torch.randn(self.generator.z_dim, generator=torch.Generator().manual_seed(rng.getrandbits(63)))
        return text, z

    def _make_chunk(self, chunk: int) -> list[WordSample]:
        start = chunk * self.chunk_size
        idx = range(start, min(self.length, start + self.chunk_size))
        draw = 0
        if self.resample:
            self._draws += 1
            draw = (os.getpid() << 32) + self._draws
        pairs = [self.text_and_style(i, draw) for i in idx]
        texts = [t for t, _ in pairs]
        images = self.generator.generate(texts, z=torch.stack([z for _, z in pairs]), natural_width=self.natural_width)
        out = []
        for i, text, img in zip(idx, texts, images):
            if img.shape[1] != self.height:
                img = to_tensor(resize_to_height(to_uint8(img), self.height))
            out.append(WordSample(img, text, f"synthetic:{self.seed}:{i}"))
        return out

    def __getitem__(self, i: int) -> WordSample:
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} synthetic words")
        chunk, offset = divmod(i, self.chunk_size)
        if chunk not in self._cache:
            self._cache[chunk] = self._make_chunk(chunk)
            self._served[chunk] = set()
        samples = self._cache[chunk]
        self._cache.move_to_end(chunk)
        if self.resample:
            # A chunk is drawn anew once each of its items has been served.
            self._served[chunk].add(offset)
            if len(self._served[chunk]) == len(samples):
                del self._cache[chunk], self._served[chunk]
        while len(self._cache) > 4:
            dropped, _ = self._cache.popitem(last=False)
            self._served.pop(dropped, None)
        return samples[offset]
