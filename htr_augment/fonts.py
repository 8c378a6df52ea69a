"""Words rendered in handwriting fonts: the naive baseline the GAN is compared against.

Fonts come from installed `fontpkg-*` wheels (OFL handwriting fonts on PyPI, e.g.
fontpkg-caveat, fontpkg-kalam, fontpkg-indie-flower), found through their
`fontpkg.family` entry points. Output follows htr_augment.images (ink = 1).

    synth = FontWordDataset(lexicon="words.txt", length=100_000, height=64, seed=0)
    image, text, writer = synth[0]      # as SyntheticWordDataset, writer "font:<style>"
"""
from __future__ import annotations

import importlib
import random
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import Dataset

from .alphabet import Alphabet
from .data.dataset import WordSample
from .images import resize_to_height, to_tensor
from .lexicon import NgramSampler, load_lexicon


def find_fonts() -> list[Path]:
    """The .ttf/.otf files of every installed fontpkg family, sorted."""
    fonts: list[Path] = []
    for ep in entry_points(group="fontpkg.family"):
        module = importlib.import_module(ep.value)
        root = Path(getattr(module, "ROOT", Path(module.__file__).parent))
        fonts += sorted(p for p in (root / "files").glob("*") if p.suffix.lower() in (".ttf", ".otf"))
    return sorted(fonts)


class FontRenderer:
    """Render words in a random installed handwriting font, size and stroke weight.

    `render(text, style)` is deterministic for a given style id."""

    def __init__(self, height: int = 64, fonts: list[Path] | None = None, seed: int = 0):
        self.fonts = fonts if fonts is not None else find_fonts()
        if not self.fonts:
            raise RuntimeError("no handwriting fonts installed: pip install fontpkg-caveat fontpkg-kalam "
                               "fontpkg-indie-flower")
        self.height, self.seed = height, seed
        self._cache: dict[tuple[Path, int], ImageFont.FreeTypeFont] = {}

    def _font(self, path: Path, size: int) -> ImageFont.FreeTypeFont:
        key = (path, size)
        if key not in self._cache:
            self._cache[key] = ImageFont.truetype(str(path), size)
        return self._cache[key]

    def _style(self, style: int) -> tuple[ImageFont.FreeTypeFont, int]:
        """(font at its size, stroke width) of a style id."""
        rng = random.Random(f"{self.seed}:{style}")
        font = self._font(self.fonts[rng.randrange(len(self.fonts))], rng.choice([40, 48, 56]))
        return font, rng.choice([0, 0, 1])

    def render_array(self, text: str, style: int) -> np.ndarray:
        font, stroke = self._style(style)
        left, top, right, bottom = font.getbbox(text, stroke_width=stroke)
        pad = 8
        img = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 255)
        ImageDraw.Draw(img).text((pad - left, pad - top), text, font=font, fill=0,
                                 stroke_width=stroke, stroke_fill=0)
        arr = np.asarray(img)
        ys, xs = np.nonzero(arr < 128)
        if len(ys):  # crop to the ink with a small margin, as segmented real words are
            m = 4
            arr = arr[max(0, ys.min() - m): ys.max() + m + 1, max(0, xs.min() - m): xs.max() + m + 1]
        return resize_to_height(arr, self.height)

    def render_words(self, words: list[str], style: int) -> tuple[list[np.ndarray], float, int]:
        """The words of a line in one style: uint8, unscaled, all of one height and on one
        baseline (the font's), each cropped to its ink columns; the font's x-height in pixels
        and the baseline row. Unlike `render_array`, a word without ascenders is not enlarged."""
        font, stroke = self._style(style)
        ascent, descent = font.getmetrics()
        pad = 4 + stroke
        out = []
        for word in words:
            left, _, right, _ = font.getbbox(word, stroke_width=stroke)
            img = Image.new("L", (right - left + 2 * pad, ascent + descent + 2 * pad), 255)
            ImageDraw.Draw(img).text((pad - left, pad + ascent), word, font=font, fill=0, anchor="ls",
                                     stroke_width=stroke, stroke_fill=0)
            arr = np.asarray(img)
            cols = np.flatnonzero((arr < 128).any(axis=0))
            out.append(arr[:, cols[0]:cols[-1] + 1] if len(cols) else arr)
        _, x_top, _, x_bottom = font.getbbox("x", anchor="ls")
        return out, float(max(1, x_bottom - x_top)), pad + ascent

    def render(self, text: str, style: int) -> torch.Tensor:
        return to_tensor(self.render_array(text, style))


class LazyRenderer:
    """For font datasets (self.height, self.fonts, self.seed): the FontRenderer is made in the
    constructor, so a missing font fails there and not in a DataLoader worker, and made again in
    each worker after unpickling, since font handles do not pickle."""
    _renderer: FontRenderer | None = None

    @property
    def renderer(self) -> FontRenderer:
        if self._renderer is None:
            self._renderer = FontRenderer(self.height, self.fonts, seed=self.seed)
        return self._renderer

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_renderer"] = None
        return state


class FontWordDataset(LazyRenderer, Dataset):
    """Font-rendered words as a torch Dataset: a drop-in for SyntheticWordDataset (same
    constructor shape, same WordSample), for comparing the GAN against fonts.

    Item i is a function of (seed, i): its text and its style (font, size, stroke, via
    FontRenderer) are drawn from a generator seeded with them; the writer id is
    "font:<style>", so items of one style share a "hand".

    Args:
        lexicon: list of words, text file, LMDB (its labels) or an NgramSampler.
        length: the dataset's (virtual) length.
        seed: item i depends only on (seed, i).
        height: output height; match your real data.
        styles: distinct styles drawn from (font, size, stroke weight) combinations.
        fonts: font files (default: every installed fontpkg font).
        legible_by, max_cer, tries: as SyntheticWordDataset's legibility filter: a word the
            recognizer does not read as its text is rendered again in another style drawn from
            (seed, i, attempt), up to `tries` styles, keeping the first read, else the best read
            (so that the fonts can be compared with filtered GAN words on equal terms).
    """

    def __init__(self, lexicon, length: int = 10_000, seed: int = 0, height: int = 64, *, styles: int = 64,
                 fonts: list[Path] | None = None, legible_by=None, max_cer: float = 0.0, tries: int = 4):
        if length < 1:
            raise ValueError("length must be positive")
        if styles < 1:
            raise ValueError("styles must be positive")
        self.length, self.seed, self.height, self.styles = length, seed, height, styles
        if isinstance(lexicon, NgramSampler):
            self.words, self.sampler = None, lexicon
        else:
            self.words, self.sampler = load_lexicon(lexicon), None
        self.alphabet = Alphabet.from_labels(self.words) if self.words else None
        self.fonts = fonts if fonts is not None else find_fonts()
        self._renderer = FontRenderer(height, self.fonts, seed=seed)
        from .gan.quality import load_reader
        self.reader, self.max_cer, self.tries = load_reader(legible_by, max_cer, tries)

    def __len__(self) -> int:
        return self.length

    def text_and_style(self, i: int) -> tuple[str, int]:
        rng = random.Random(f"{self.seed}:{i}")
        text = self.sampler.sample(rng) if self.sampler is not None else rng.choice(self.words)
        return text, rng.randrange(self.styles)

    def __getitem__(self, i: int) -> WordSample:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[WordSample]:
        """Items `indices` at once (a DataLoader batch): with a legibility filter, the reader then
        reads each attempt's renderings in one call instead of one word at a time."""
        idx = []
        for i in indices:
            j = i + self.length if i < 0 else i
            if not 0 <= j < self.length:
                raise IndexError(f"index {i} out of range for {self.length} font-rendered words")
            idx.append(j)
        plans = [self.text_and_style(i) for i in idx]
        texts = [text for text, _ in plans]
        images = [self.renderer.render(text, style) for text, style in plans]
        chosen = [0] * len(idx)
        if self.reader is not None:
            # A word the reader misreads is rendered again in the style of (seed, i, attempt).
            from .gan.quality import pick_legible
            images, chosen = pick_legible(
                texts, images, self.reader,
                lambda attempt, todo: [self.renderer.render(texts[k], self._style_of(idx[k], plans[k][1], attempt))
                                       for k in todo],
                self.max_cer, self.tries)
        return [WordSample(image, text, f"font:{self._style_of(i, style, attempt)}")
                for i, (text, style), image, attempt in zip(idx, plans, images, chosen)]

    def _style_of(self, i: int, style: int, attempt: int) -> int:
        """Item i's style at a legibility attempt: its own at 0, else one drawn from (seed, i, attempt)."""
        return style if attempt == 0 else random.Random(f"{self.seed}:{i}:style{attempt}").randrange(self.styles)
