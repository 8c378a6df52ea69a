"""The one CER/WER of the project: corpus-level edit distance over reference length.

CER = sum of character edit distances / sum of reference lengths; WER likewise over
whitespace-separated words (for single words this is 1 - exact match). Summing
before dividing keeps the numbers exact under sharding: gather the sums, not rates.
"""
from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import editdistance


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


NORMALISATIONS = {
    "exact": lambda s: s,
    "case-insensitive": lambda s: s.casefold(),
    "accent-stripped": strip_accents,
    "case-and-accent-insensitive": lambda s: strip_accents(s).casefold(),
}


@dataclass
class EditCounts:
    """Sums from which CER and WER follow; add them across batches or processes."""
    char_errors: int = 0
    char_total: int = 0
    word_errors: int = 0
    word_total: int = 0
    samples: int = 0

    def add(self, reference: str, hypothesis: str) -> None:
        self.char_errors += editdistance.eval(reference, hypothesis)
        self.char_total += len(reference)
        ref_words, hyp_words = reference.split(), hypothesis.split()
        self.word_errors += editdistance.eval(ref_words, hyp_words)
        self.word_total += len(ref_words)
        self.samples += 1

    def __iadd__(self, other: "EditCounts") -> "EditCounts":
        for k in ("char_errors", "char_total", "word_errors", "word_total", "samples"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        return self

    def as_list(self) -> list[int]:
        return [self.char_errors, self.char_total, self.word_errors, self.word_total, self.samples]

    @classmethod
    def from_list(cls, values: Iterable[int]) -> "EditCounts":
        return cls(*[int(v) for v in values])

    @property
    def cer(self) -> float:
        return self.char_errors / max(1, self.char_total)

    @property
    def wer(self) -> float:
        return self.word_errors / max(1, self.word_total)


def edit_counts(references: Iterable[str], hypotheses: Iterable[str], normalisation: str = "exact") -> EditCounts:
    norm = NORMALISATIONS[normalisation]
    counts = EditCounts()
    for r, h in zip(references, hypotheses, strict=True):
        counts.add(norm(r), norm(h))
    return counts


def cer(references: Iterable[str], hypotheses: Iterable[str]) -> float:
    return edit_counts(references, hypotheses).cer


def wer(references: Iterable[str], hypotheses: Iterable[str]) -> float:
    return edit_counts(references, hypotheses).wer
