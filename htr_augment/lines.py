"""Synthetic text lines: a corpus line written word by word in one hand, laid out as real
writers lay words out (htr_augment.line_stats), as a torch Dataset.

    from htr_augment import SyntheticLineDataset, FontLineDataset
    lines = SyntheticLineDataset(corpus="corpus.txt", height=64, seed=0)   # the shipped generator
    image, text, writer = lines[0]        # what LmdbWordDataset yields for real lines
    fonts = FontLineDataset(corpus="corpus.txt", height=64, seed=0)        # the naive baseline

Item i is a function of (seed, i) alone: its text (corpus line i, or a line drawn from
(seed, i) when `length` is given), its style (one z for every word of the line, or one font)
and its layout (gaps, baseline offsets and slant changes drawn from the measured
distributions). So item i is the same in every epoch, DataLoader worker and DDP rank.
Corpus lines that cannot be written (empty, or holding characters outside the alphabet)
are counted in `corpus.rejects` with their file and line, and logged.
"""
from __future__ import annotations

import logging
import os
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .alphabet import Alphabet
from .atomic import write_table_atomic
from .data.dataset import DEFAULT_HEIGHT, WordSample
from .data.sources import _read_text_lines, normalize_label, reject_counts
from .fonts import FontRenderer, LazyRenderer, find_fonts
from .images import ink_mask, resize_to_height, to_tensor, to_uint8
from .line_stats import LineLayout, LineStats, core_band, shear

log = logging.getLogger(__name__)


@dataclass
class LineCorpus:
    """Writable lines with where each came from; `rejects` lists [source, reason, detail]."""
    texts: list[str]
    sources: list[str]
    rejects: list[list[str]] = field(default_factory=list)
    name: str = ""

    def summary(self) -> str:
        total = len(self.texts) + len(self.rejects)
        lines = [f"{self.name}: {len(self.texts)} of {total} lines usable"]
        if self.rejects:
            lines.append(f"rejected {len(self.rejects)}:")
            lines += reject_counts(self.rejects)
            lines += [f"  e.g. {s}: {d}" for s, _, d in self.rejects[:5]]
        return "\n".join(lines)

    def write_rejects(self, path: str | os.PathLike) -> Path:
        return write_table_atomic(path, [["source", "reason", "detail"]] + self.rejects)


def load_corpus(source, alphabet: Alphabet | None = None) -> LineCorpus:
    """Lines of text from a list, a UTF-8 text file (one line per line) or an LMDB (its labels).

    Labels are NFC with whitespace collapsed (as htr-build-lmdb stores them). Empty lines and
    lines with characters `alphabet` lacks are rejected, each named by file and line number."""
    if isinstance(source, LineCorpus):
        return source
    if isinstance(source, (list, tuple)):
        name, raw = "list", [(f"list[{i}]", t) for i, t in enumerate(source)]
    else:
        path = Path(source)
        name = str(path)
        if (path / "data.mdb").is_file():
            from .data.lmdb_format import label_key, open_shared, read_num_samples, source_key
            with open_shared(path).begin() as txn:
                raw = []
                for i in range(1, read_num_samples(txn, path) + 1):
                    src = txn.get(source_key(i))
                    raw.append((f"{path}#{i}" + (f" ({src.decode('utf-8')})" if src else ""),
                                txn.get(label_key(i)).decode("utf-8")))
        elif path.is_file():
            raw = [(f"{path}:{n}", t) for n, t in enumerate(_read_text_lines(path), 1)]  # names a non-UTF-8 line
        else:
            raise FileNotFoundError(f"{path}: no corpus text file or LMDB here")
    corpus = LineCorpus([], [], [], name)
    for where, text in raw:
        text = normalize_label(text)
        missing = alphabet.missing(text.replace(" ", "")) if alphabet is not None and text else []
        if not text:
            corpus.rejects.append([where, "empty line", "no text"])
        elif missing:
            shown = " ".join(f"{c!r} (U+{ord(c):04X})" for c in missing)
            corpus.rejects.append([where, "character outside the alphabet", f"{shown} in {text!r}"])
        else:
            corpus.texts.append(text)
            corpus.sources.append(where)
    if corpus.rejects:
        log.warning("%s", corpus.summary())
    if not corpus.texts:
        raise ValueError(f"{corpus.summary()}\nno line of the corpus can be written")
    return corpus


def compose_line(words: list[np.ndarray], layout: LineLayout, stats: LineStats, *,
                 xheight: float | None = None, baseline: int | None = None) -> np.ndarray:
    """Set word images (float, ink = 1, one height, on one baseline) into a line.

    Gaps and baseline offsets are in x-heights: `xheight` and the `baseline` row are the
    words' (measured from their joint row ink profile when not given). Each word is sheared
    by its slant change about the baseline, trimmed to its ink columns and shifted; the line
    is then framed so that its x-height is the measured share of the line height, as in real
    line crops (never cutting ink)."""
    if len(layout.gaps) != len(words) - 1 or len(layout.offsets) != len(words):
        raise ValueError(f"a layout for {len(layout.offsets)} words given for {len(words)} words")
    masks = [ink_mask(to_uint8(torch.from_numpy(w))) for w in words]
    if xheight is None or baseline is None:
        band = core_band(np.concatenate(masks, axis=1))
        top, bottom = band if band is not None else (0, words[0].shape[0])
        xheight, baseline = float(max(1, bottom - top)), bottom
    placed = []
    for w, m, a in zip(words, masks, layout.slants):
        if a:
            w = shear(w, a, baseline)
            m = shear(m.astype(np.uint8), a, baseline) > 0
        cols = np.flatnonzero((m | (w > 0.25)).any(axis=0))  # Otsu may miss a GAN's faint stroke ends
        placed.append(w[:, cols[0]:cols[-1] + 1] if len(cols) else w)
    dys = [round(o * xheight) for o in layout.offsets]
    gaps = [max(1, round(g * xheight)) for g in layout.gaps]
    margin_y, margin_x = max(abs(d) for d in dys), max(1, round(0.25 * xheight))
    h = words[0].shape[0]
    canvas = np.zeros((h + 2 * margin_y, sum(p.shape[1] for p in placed) + sum(gaps) + 2 * margin_x), np.float32)
    x = margin_x
    for k, (p, dy) in enumerate(zip(placed, dys)):
        region = canvas[margin_y + dy:margin_y + dy + h, x:x + p.shape[1]]
        np.maximum(region, p, out=region)
        x += p.shape[1] + (gaps[k] if k < len(gaps) else 0)
    # Frame: the line height real crops have for this x-height, the core band where theirs is.
    height = max(h, round(xheight / stats.xheight_ratio))
    top = round(margin_y + baseline - xheight / 2 - stats.core_mid * height)
    rows = np.flatnonzero(canvas.max(axis=1) > 0.5)
    if len(rows):
        top = min(top, int(rows[0]))
        height = max(height, int(rows[-1]) + 1 - top)
    framed = np.zeros((height, canvas.shape[1]), np.float32)
    src0, src1 = max(0, top), min(canvas.shape[0], top + height)
    framed[src0 - top:src1 - top] = canvas[src0:src1]
    return framed


def to_line_tensor(line: np.ndarray, height: int) -> torch.Tensor:
    """A composed line (float, ink = 1) as the (1, height, W) tensor every dataset yields."""
    return to_tensor(resize_to_height(to_uint8(torch.from_numpy(line)), height))


def _load_stats(stats) -> LineStats:
    return stats if isinstance(stats, LineStats) else LineStats.load(stats)


class _LineDataset(Dataset):
    def __init__(self, corpus: LineCorpus, length: int | None, seed: int, height: int, stats):
        self.corpus = corpus
        self.length = len(corpus.texts) if length is None else int(length)
        if self.length < 1:
            raise ValueError("length must be positive")
        self.by_index = length is None
        self.seed, self.height = seed, height
        self.stats = _load_stats(stats)

    def __len__(self) -> int:
        return self.length

    def _rng_and_text(self, i: int) -> tuple[random.Random, str]:
        rng = random.Random(f"{self.seed}:{i}")
        texts = self.corpus.texts
        return rng, (texts[i] if self.by_index else texts[rng.randrange(len(texts))])

    def _check_index(self, i: int) -> int:
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} synthetic lines")
        return i


class SyntheticLineDataset(_LineDataset):
    """Lines written by the GAN, every word of a line from the line's one style vector z.

    Args:
        generator: a WordGenerator, a GAN checkpoint path, or None for the package's weights.
        corpus: lines of text: a list, a text file (one line per line), an LMDB (its labels)
            or a LineCorpus. Lines the generator cannot write are counted in `corpus.rejects`.
        length: None: one item per corpus line, in order; else this many items, each
            a corpus line drawn from (seed, i).
        seed: item i depends only on (seed, i).
        height: output height, the line height your recognizer uses.
        stats: LineStats or the path of its JSON (default: the stats shipped with the weights).
        chunk_size: lines generated per forward pass (all their words in one batch).
        style_temperature: line styles at this multiple of the prior's spread (WordGenerator.prior_style);
            default: the generator's own for lines (WordGenerator.line_style_temperature).
    """

    def __init__(self, generator=None, corpus=None, length: int | None = None, seed: int = 0,
                 height: int = DEFAULT_HEIGHT, stats=None, device: str = "cpu", chunk_size: int = 8,
                 style_temperature: float | None = None):
        from .gan.word_generator import WordGenerator
        if corpus is None:
            raise ValueError("corpus: give the lines to write (a list, a text file or an LMDB)")
        self._gen_source = generator if isinstance(generator, (str, os.PathLike)) or generator is None else None
        self._gen: WordGenerator | None = generator if isinstance(generator, WordGenerator) else None
        self.device, self.chunk_size = device, chunk_size
        gen = self.generator
        self.style_temperature = gen.resolve_style_temperature(style_temperature, lines=True)
        # a line recognizer also reads the space, which a word generator need not write
        self.alphabet = Alphabet(sorted(set(gen.alphabet.chars) | {" "}))
        super().__init__(load_corpus(corpus, gen.alphabet), length, seed, height, stats)
        self._cache: OrderedDict[int, list[WordSample]] = OrderedDict()

    @property
    def generator(self):
        if self._gen is None:  # loaded lazily, once per process (workers included)
            from .gan.word_generator import WordGenerator
            self._gen = WordGenerator.load(self._gen_source, device=self.device)
        return self._gen

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        if self._gen_source is not None or self._gen is None:
            state["_gen"] = None  # reload from the path in the worker instead of pickling weights
        return state

    def plan(self, i: int) -> tuple[str, torch.Tensor, LineLayout]:
        """Item i's text, its one style vector z and its layout."""
        rng, text = self._rng_and_text(i)
        z = torch.randn(self.generator.z_dim, generator=torch.Generator().manual_seed(rng.getrandbits(63)))
        z = self.generator.prior_style(z, self.style_temperature)  # the generator's own style distribution
        return text, z, self.stats.sample_layout(len(text.split()), rng)

    def _make_chunk(self, chunk: int) -> list[WordSample]:
        idx = range(chunk * self.chunk_size, min(self.length, (chunk + 1) * self.chunk_size))
        plans = [self.plan(i) for i in idx]
        words = [t.split() for t, _, _ in plans]
        z = torch.stack([zi for (_, zi, _), w in zip(plans, words) for _ in w])  # one z per line, for each word
        images = iter(self.generator.generate([w for ws in words for w in ws], z=z))
        out = []
        for i, (text, _, layout), ws in zip(idx, plans, words):
            line = compose_line([next(images)[0].numpy() for _ in ws], layout, self.stats)
            out.append(WordSample(to_line_tensor(line, self.height), text, f"synthetic:{self.seed}:{i}"))
        return out

    def __getitem__(self, i: int) -> WordSample:
        i = self._check_index(i)
        chunk, offset = divmod(i, self.chunk_size)
        if chunk not in self._cache:
            self._cache[chunk] = self._make_chunk(chunk)
        self._cache.move_to_end(chunk)
        while len(self._cache) > 4:
            self._cache.popitem(last=False)
        return self._cache[chunk][offset]


class FontLineDataset(LazyRenderer, _LineDataset):
    """Lines rendered in handwriting fonts, laid out with the same measured statistics: the
    naive baseline for SyntheticLineDataset (same arguments; writer "font:<style>").

    Args beyond SyntheticLineDataset's: styles (distinct font/size/stroke styles), fonts
    (font files; default every installed fontpkg font), alphabet (reject corpus lines it
    does not cover; default: none rejected but empty ones).
    """

    def __init__(self, corpus, length: int | None = None, seed: int = 0, height: int = DEFAULT_HEIGHT,
                 stats=None, *, styles: int = 64, fonts: list[Path] | None = None, alphabet: Alphabet | None = None):
        if styles < 1:
            raise ValueError("styles must be positive")
        super().__init__(load_corpus(corpus, alphabet), length, seed, height, stats)
        self.styles = styles
        self.alphabet = alphabet or Alphabet.from_labels(self.corpus.texts)
        self.fonts = fonts if fonts is not None else find_fonts()
        self._renderer = FontRenderer(height, self.fonts, seed=seed)  # made now: a missing font fails here

    def plan(self, i: int) -> tuple[str, int, LineLayout]:
        rng, text = self._rng_and_text(i)
        style = rng.randrange(self.styles)
        return text, style, self.stats.sample_layout(len(text.split()), rng)

    def __getitem__(self, i: int) -> WordSample:
        i = self._check_index(i)
        text, style, layout = self.plan(i)
        images, _, _ = self.renderer.render_words(text.split(), style)
        words = [1.0 - im.astype(np.float32) / 255.0 for im in images]
        # x-height measured as on the real lines (core band), not the font's own: gaps in the same unit
        line = compose_line(words, layout, self.stats)
        return WordSample(to_line_tensor(line, self.height), text, f"font:{style}")


def line_grid(real_lines: str | os.PathLike, count: int = 4, height: int = 64, seed: int = 0,
              generator=None) -> np.ndarray:
    """uint8 image: the first `count` real lines (an LMDB) the generator can write, each
    above a GAN line and a font line of the same text, labelled."""
    from recognizer.segment import render_grid

    from .data.dataset import LmdbWordDataset
    from .gan.word_generator import WordGenerator
    gen = generator if isinstance(generator, WordGenerator) else WordGenerator.load(generator)
    real = LmdbWordDataset(real_lines, height=height)
    picked = [k for k, t in enumerate(real.texts) if not gen.alphabet.missing(t.replace(" ", ""))][:count]
    texts = [real.texts[k] for k in picked]
    gan = SyntheticLineDataset(gen, texts, height=height, seed=seed)
    fonts = FontLineDataset(texts, height=height, seed=seed)
    rows = []
    for j, k in enumerate(picked):
        rows += [(to_uint8(real[k].image), f"real ({real.writers[k]}): {texts[j]}"),
                 (to_uint8(gan[j].image), "GAN, one style for the line"), (to_uint8(fonts[j].image), "fonts")]
    return render_grid(rows, columns=1)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .atomic import write_atomic
    from .images import encode_png
    p = argparse.ArgumentParser(prog="python -m htr_augment.lines",
                                description="Draw real lines beside GAN and font lines of the same text.")
    p.add_argument("--real", required=True, help="LMDB of real lines")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("-n", type=int, default=4)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", help="GAN weights (default: the shipped ones)")
    args = p.parse_args(argv)
    write_atomic(args.out, encode_png(line_grid(args.real, args.n, args.height, args.seed, args.checkpoint)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
