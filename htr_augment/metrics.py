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


def edit_operations(reference, hypothesis) -> list[tuple[str, object, object]]:
    """The edits of one minimal Levenshtein alignment, for error analysis.

    Returns (op, ref_item, hyp_item) with op "S" (substitution), "D" (deletion: hyp_item
    None) or "I" (insertion: ref_item None), in reference order; matches are left out, so
    len(result) == editdistance.eval(reference, hypothesis). Works on strings (characters)
    and on lists of words. Ties prefer substitution, then deletion, so counts are stable.
    """
    ref, hyp = list(reference), list(hypothesis)
    n, m = len(ref), len(hyp)
    # dist[i][j]: edit distance of ref[:i] and hyp[:j]
    dist = [list(range(m + 1))] + [[i] + [0] * m for i in range(1, n + 1)]
    for i in range(1, n + 1):
        row, prev, r = dist[i], dist[i - 1], ref[i - 1]
        for j in range(1, m + 1):
            row[j] = min(prev[j - 1] + (r != hyp[j - 1]), prev[j] + 1, row[j - 1] + 1)
    ops: list[tuple[str, object, object]] = []
    i, j = n, m
    while i or j:
        if i and j and dist[i][j] == dist[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            if ref[i - 1] != hyp[j - 1]:
                ops.append(("S", ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i and dist[i][j] == dist[i - 1][j] + 1:
            ops.append(("D", ref[i - 1], None))
            i -= 1
        else:
            ops.append(("I", None, hyp[j - 1]))
            j -= 1
    ops.reverse()
    return ops


CHAR_CLASSES = ("lowercase", "capital", "accented", "digit", "punctuation")


def char_class(c: str) -> str:
    """One of CHAR_CLASSES for a character (accented letters of either case are "accented";
    spaces and symbols are "punctuation")."""
    if c.isdigit():
        return "digit"
    if c.isalpha():
        if strip_accents(c) != c:
            return "accented"
        return "capital" if c.isupper() else "lowercase"
    return "punctuation"


def class_errors(pairs: Iterable[tuple[str, str]]) -> dict[str, tuple[int, int]]:
    """Errors by the class of the reference character they fall on: {class: (errors, reference
    characters)} over (reference, hypothesis) pairs. Substitutions and deletions count against
    their reference character; insertions, which have none, are left out, so the errors sum to
    at most the edit distance."""
    errors = dict.fromkeys(CHAR_CLASSES, 0)
    totals = dict.fromkeys(CHAR_CLASSES, 0)
    for ref, hyp in pairs:
        for c in ref:
            totals[char_class(c)] += 1
        for op, r, _ in edit_operations(ref, hyp):
            if op != "I":
                errors[char_class(r)] += 1
    return {k: (errors[k], totals[k]) for k in CHAR_CLASSES}
