"""The line level of benchmarks.run: synthetic *lines* mixed into the line recognizer's batches.

At --level lines every synthetic source writes whole lines (htr_augment.lines) instead of
words: the gan arm SyntheticLineDataset (every word of a line in the line's one style), the
fonts arm FontLineDataset, both laid out with the layout statistics measured on real lines
and rendered at the recognizer's height. Their corpus is the regime's own training line
texts (the low-resource writers' lines), or --corpus (a text file, one line of text per line,
or an LMDB's labels). Lines with characters that the recognizer's alphabet, or the
generator's, lacks are rejected, counted and logged with file and line
(htr_augment.lines.load_corpus); the space needs no glyph, it is the layout's gap.

The lines are cached as the words are (benchmarks.run.cache_source_words): their key also
holds the level and the SHA-256 of the layout statistics, since other statistics draw other lines.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from torch.utils.data import Dataset

from htr_augment.alphabet import Alphabet
from htr_augment.line_stats import PACKAGE_STATS
from htr_augment.lines import load_corpus
from htr_augment.training.checkpoint import file_sha256

log = logging.getLogger("benchmarks.lines")

GRID_LINES = 8  # synthetic lines drawn per arm and regime in report.html, one per row


def writable(recognizer: Alphabet, generator: Alphabet | None) -> Alphabet:
    """The characters a synthetic line may hold besides the space: those the recognizer must
    learn and (for the GAN) the generator can write."""
    chars = set(recognizer.chars) - {" "}
    if generator is not None:
        chars &= set(generator.chars)
    return Alphabet(sorted(chars))


def corpus_lines(corpus: str | os.PathLike | None, training_texts: list[str], recognizer: Alphabet,
                 generator: Alphabet | None, what: str) -> list[str]:
    """The lines a source writes: `corpus` (file or LMDB), else the distinct training line texts
    (sorted, so the corpus hash does not depend on the order of the LMDB); unwritable lines are
    rejected with where they came from. `what` names the source in the messages."""
    source = str(corpus) if corpus else sorted(set(training_texts))
    try:
        loaded = load_corpus(source, writable(recognizer, generator))
    except ValueError as e:  # none writable: load_corpus's summary names the file and the rejects
        raise ValueError(f"synthetic lines ({what} arms): {e}") from None
    if loaded.rejects:
        log.warning("synthetic lines (%s): %d of %d corpus lines left out (%s)", what, len(loaded.rejects),
                    len(loaded.rejects) + len(loaded.texts), ", ".join(r[1] for r in loaded.rejects[:3]))
    return loaded.texts


def line_dataset(kind: str, generator: Path | None, texts: list[str], length: int, seed: int, height: int,
                 device: str, style_temperature: float = 1.0, fonts: list[Path] | None = None) -> Dataset:
    """`length` lines drawn from `texts` by (seed, index): GAN lines (kind "gan") or font lines."""
    if kind == "gan":
        from htr_augment.lines import SyntheticLineDataset
        # A path, not the loaded generator: DataLoader workers reload it instead of unpickling weights.
        return SyntheticLineDataset(str(generator), texts, length=length, seed=seed, height=height, device=device,
                                    style_temperature=style_temperature)
    from htr_augment.lines import FontLineDataset
    return FontLineDataset(texts, length=length, seed=seed, height=height, fonts=fonts)


def line_stats_sha256() -> str:
    """SHA-256 of the layout statistics the line datasets draw from (the package's)."""
    return file_sha256(PACKAGE_STATS)
