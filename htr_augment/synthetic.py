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

With `styles` (an LMDB of real words, e.g. a low-resource writer's own), an item's
style is instead the style encoder's vector of a real word image, also drawn from
(seed, i); `style_mix` is the fraction of items written that way.

With `legible_by` (a recognizer), a word that it does not read as its text (CER above
`max_cer`) is written again in another style, drawn from (seed, i, attempt), up to `tries`
styles; the first legible one is kept, else the one read best. The text never changes, so
the lexicon's distribution does not either: a synthetic word whose image says another
word teaches the recognizer trained on it a wrong label.
"""
from __future__ import annotations

import logging
import os
import random
from collections import OrderedDict

import torch
from torch.utils.data import Dataset

from .data.dataset import LmdbWordDataset, WordSample
from .images import resize_to_height, to_tensor, to_uint8
from .lexicon import NgramSampler, load_lexicon, restrict

log = logging.getLogger(__name__)

# Encoded style vectors kept per process (z_dim floats each); the cache is emptied when full.
STYLE_CACHE_SIZE = 65_536


class SyntheticWordDataset(Dataset):
    """Args:
        generator: a WordGenerator, a GAN checkpoint path, or None for the package's weights.
        lexicon: list of words, text file, LMDB (its labels) or an NgramSampler. Each entry is
            drawn alike, so repeats weigh a word (lexicon.weigh_words: by type or by token).
        length: the dataset's (virtual) length.
        seed: item i depends only on (seed, i).
        height: output height (default: the generator's); match your real data.
        resample: draw new text and style at every access instead.
        device: where the generator runs ("cuda" only with num_workers=0 or spawn workers).
        chunk_size: words generated per forward pass.
        styles: None (styles drawn from the generator's z prior), or an LMDB path or
            LmdbWordDataset of real word images whose styles (style encoder) the items take.
        style_mix: fraction of items styled by a real word image, the rest from the z prior
            (default 1.0 with styles). Items from the prior are the same as without styles.
        style_temperature: prior styles at this multiple of the prior's spread (WordGenerator.prior_style);
            default: the generator's own (1 unless its weights were exported with another).
        legible_by: None, or a recognizer that must read each word as its text: a shipped name such as
            "copiste-words", a checkpoint path, or a callable list of images -> list of texts (e.g. a
            htr_augment.gan.quality.Reader; picklable if DataLoader workers use the dataset).
        max_cer: with legible_by, the largest CER at which a word counts as read (0: exactly).
        tries: with legible_by, styles tried per word before keeping the one read best.
    """

    def __init__(self, generator=None, lexicon=None, length: int = 10_000, seed: int = 0,
                 height: int | None = None, resample: bool = False, device: str = "cpu",
                 chunk_size: int = 32, natural_width: bool = True, max_length: int | None = None,
                 styles: str | os.PathLike | LmdbWordDataset | None = None, style_mix: float | None = None,
                 style_temperature: float | None = None, legible_by=None, max_cer: float = 0.0,
                 tries: int = 4):
        from .gan.word_generator import WordGenerator
        if length < 1:
            raise ValueError("length must be positive")
        self._gen_source = generator if isinstance(generator, (str, os.PathLike)) or generator is None else None
        self._gen: WordGenerator | None = generator if isinstance(generator, WordGenerator) else None
        gen = self.generator
        self.alphabet = gen.alphabet
        self.length, self.seed, self.resample = length, seed, resample
        self.style_temperature = gen.resolve_style_temperature(style_temperature)
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
        self.styles, self.style_mix = self._load_styles(styles, style_mix)
        from .gan.quality import load_reader
        self.reader, self.max_cer, self.tries = load_reader(legible_by, max_cer, tries)
        self._cache: OrderedDict[int, list[WordSample]] = OrderedDict()
        self._served: dict[int, set[int]] = {}
        self._style_cache: dict[int, torch.Tensor] = {}
        self._draws = 0

    def _load_styles(self, styles, style_mix: float | None) -> tuple[LmdbWordDataset | None, float]:
        if styles is None:
            if style_mix is not None:
                raise ValueError("style_mix needs styles (an LMDB of real word images)")
            return None, 0.0
        style_mix = 1.0 if style_mix is None else float(style_mix)
        if not 0.0 <= style_mix <= 1.0:
            raise ValueError(f"style_mix must be between 0 and 1, got {style_mix}")
        gen = self.generator
        if not gen.has_style_encoder:
            where = gen.info.get("path", "the given WordGenerator")
            raise ValueError(f"{where}: these generator weights have no style encoder (trained before styles "
                             "from images existed), so styles= cannot be used; pass weights trained with one")
        if not isinstance(styles, LmdbWordDataset):
            styles = LmdbWordDataset(styles)  # as LmdbWordDataset(path) serves them: same styles
        if len(styles) == 0:
            raise ValueError(f"styles: {styles.path} has no usable word image")
        return styles, style_mix

    @property
    def generator(self):
        if self._gen is None:  # loaded lazily, once per process (workers included)
            from .gan.word_generator import WordGenerator
            self._gen = WordGenerator.load(self._gen_source, device=getattr(self, "device", "cpu"))
        return self._gen

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"], state["_served"], state["_style_cache"] = OrderedDict(), {}, {}
        if self._gen_source is not None or self._gen is None:
            state["_gen"] = None  # reload from the path in the worker instead of pickling weights
        return state

    def __len__(self) -> int:
        return self.length

    def _draw(self, i: int, draw: int = 0, attempt: int = 0) -> tuple[str, torch.Tensor, int | None]:
        """Item i's text, prior style z and the index of its real style image (None: z); the
        attempt-th style of the same text (legible_by) for attempt > 0."""
        key = f"{self.seed}:{i}:{draw}"
        rng = random.Random(key)
        text = self.sampler.sample(rng) if self.sampler is not None else rng.choice(self.words)
        if attempt:
            rng = random.Random(f"{key}:style{attempt}")
        z = torch.randn(self.generator.z_dim, generator=torch.Generator().manual_seed(rng.getrandbits(63)))
        z = self.generator.prior_style(z, self.style_temperature)  # the generator's own style distribution
        ref = None
        if self.styles is not None and rng.random() < self.style_mix:  # drawn after z: prior items keep theirs
            ref = rng.randrange(len(self.styles))
        return text, z, ref

    def text_and_style(self, i: int, draw: int = 0) -> tuple[str, torch.Tensor]:
        """The text and style vector of item i (of its `draw`-th resampling; with legible_by, its
        first style, which the filter may replace)."""
        text, z, ref = self._draw(i, draw)
        return text, (self._encode_styles([ref])[0] if ref is not None else z)

    def style_of(self, i: int, draw: int = 0) -> int | None:
        """Index in `styles` of the real word image that styles item i (None: the z prior)."""
        return self._draw(i, draw)[2]

    def _encode_styles(self, refs: list[int]) -> torch.Tensor:
        """Style vectors (len(refs), z_dim) of the style images at `refs`, cached per process.

        Encoded in batches of one text length: the images of a batch are then all of G's
        width for that length, so no padding makes a vector depend on its batch (chunk)."""
        if len(self._style_cache) + len(refs) > STYLE_CACHE_SIZE:
            self._style_cache.clear()
        missing: dict[int, list[int]] = {}
        for r in dict.fromkeys(refs):
            if r not in self._style_cache:
                missing.setdefault(len(self.styles.texts[r]), []).append(r)
        for group in missing.values():
            samples = [self.styles[r] for r in group]
            vectors = self.generator.encode_styles([s.image for s in samples], [s.text for s in samples])
            self._style_cache.update(zip(group, vectors))
        return torch.stack([self._style_cache[r] for r in refs])

    def _make_chunk(self, chunk: int) -> list[WordSample]:
        start = chunk * self.chunk_size
        idx = range(start, min(self.length, start + self.chunk_size))
        draw = 0
        if self.resample:
            self._draws += 1
            draw = (os.getpid() << 32) + self._draws
        texts, images = self._write([self._draw(i, draw) for i in idx])
        if self.reader is not None:
            images = self._legible(idx, draw, texts, images)
        out = []
        for i, text, img in zip(idx, texts, images):
            if img.shape[1] != self.height:
                img = to_tensor(resize_to_height(to_uint8(img), self.height))
            out.append(WordSample(img, text, f"synthetic:{self.seed}:{i}"))
        return out

    def _write(self, plans: list[tuple[str, torch.Tensor, int | None]]) -> tuple[list[str], list[torch.Tensor]]:
        texts = [t for t, _, _ in plans]
        z = torch.stack([z for _, z, _ in plans])
        styled = [k for k, (_, _, ref) in enumerate(plans) if ref is not None]
        if styled:
            z[styled] = self._encode_styles([plans[k][2] for k in styled])
        return texts, list(self.generator.generate(texts, z=z, natural_width=self.natural_width))

    def _legible(self, idx: range, draw: int, texts: list[str], images: list[torch.Tensor]) -> list[torch.Tensor]:
        """`images`, each word the reader does not read as its text written again in other styles."""
        from .gan.quality import pick_legible
        return pick_legible(texts, images, self.reader,
                            lambda attempt, todo: self._write([self._draw(idx[k], draw, attempt) for k in todo])[1],
                            self.max_cer, self.tries)[0]

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
