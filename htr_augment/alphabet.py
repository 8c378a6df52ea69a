"""The one alphabet of the project: characters <-> CTC class indices.

Index 0 is the CTC blank; characters take 1..N in sorted order so that the same
set of labels always gives the same alphabet. Every label is NFC-normalised on
the way in, so "é" typed as e + combining accent and as one code point agree.
"""
from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

BLANK = 0


def normalize_text(text: str) -> str:
    """NFC-normalise a label; the single text normalisation used everywhere."""
    return unicodedata.normalize("NFC", text)


class AlphabetError(ValueError):
    """A label holds characters the alphabet does not have."""

    def __init__(self, chars: Sequence[str], text: str, sample: str | None = None):
        self.chars = list(chars)
        self.text = text
        self.sample = sample
        shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in self.chars)
        where = f" in sample {sample}" if sample else ""
        super().__init__(f"character(s) {shown} not in the alphabet{where}: label {text!r}")


class Alphabet:
    """An ordered character set with the CTC blank at index 0."""

    def __init__(self, chars: Iterable[str]):
        chars = [normalize_text(c) for c in chars]
        for c in chars:
            if len(c) != 1:
                raise ValueError(f"alphabet entries must be single characters, got {c!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("alphabet has duplicate characters")
        self.chars: list[str] = chars
        self._index = {c: i + 1 for i, c in enumerate(chars)}

    # -- construction -----------------------------------------------------
    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> "Alphabet":
        seen: set[str] = set()
        for label in labels:
            seen.update(normalize_text(label))
        return cls(sorted(seen))

    @classmethod
    def from_json(cls, text: str) -> "Alphabet":
        data = json.loads(text)
        if isinstance(data, dict):
            data = data.get("chars")
        if not isinstance(data, list):
            raise ValueError('alphabet JSON must be a list of characters or {"chars": [...]}')
        return cls(data)

    def to_json(self) -> str:
        return json.dumps({"blank": BLANK, "chars": self.chars}, ensure_ascii=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Alphabet":
        """Read an alphabet from JSON (as written by `save`) or a plain text file of its characters."""
        text = Path(path).read_text(encoding="utf-8")
        if text.lstrip().startswith(("[", "{")):
            try:
                return cls.from_json(text)
            except (json.JSONDecodeError, ValueError) as e:
                raise ValueError(f"{path}: not a valid alphabet JSON file ({e})") from e
        return cls(sorted(set(normalize_text(text.replace("\n", "").replace("\r", "")))))

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    # -- use --------------------------------------------------------------
    def __len__(self) -> int:
        """Number of CTC classes, the blank included."""
        return len(self.chars) + 1

    def __contains__(self, char: str) -> bool:
        return char in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Alphabet) and self.chars == other.chars

    def __repr__(self) -> str:
        return f"Alphabet({''.join(self.chars)!r})"

    def missing(self, text: str) -> list[str]:
        """Characters of `text` (NFC) that the alphabet lacks, in order of first appearance."""
        out: list[str] = []
        for c in normalize_text(text):
            if c not in self._index and c not in out:
                out.append(c)
        return out

    def encode(self, text: str, sample: str | None = None) -> list[int]:
        """Class indices of `text`; raises AlphabetError naming the characters and the sample."""
        text = normalize_text(text)
        try:
            return [self._index[c] for c in text]
        except KeyError:
            raise AlphabetError(self.missing(text), text, sample) from None

    def decode(self, indices: Iterable[int]) -> str:
        """Characters of class indices, blanks skipped (no CTC collapsing: see recognizer.decoding)."""
        out = []
        for i in indices:
            i = int(i)
            if i == BLANK:
                continue
            if not 0 < i <= len(self.chars):
                raise ValueError(f"class index {i} outside the alphabet (1..{len(self.chars)})")
            out.append(self.chars[i - 1])
        return "".join(out)
