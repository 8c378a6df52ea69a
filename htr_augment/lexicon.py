"""Where the words to generate come from: a list, a text file, an LMDB's labels, or an n-gram sampler."""
from __future__ import annotations

import os
import random
from collections import Counter, defaultdict
from pathlib import Path

from .alphabet import Alphabet, normalize_text


def load_lexicon(source: str | os.PathLike | list[str]) -> list[str]:
    """Words from a list, a UTF-8 text file (one word per line) or an LMDB (its labels)."""
    if isinstance(source, (list, tuple)):
        words = [normalize_text(w).strip() for w in source]
    else:
        path = Path(source)
        if (path / "data.mdb").is_file():
            from .data.lmdb_format import label_key, open_shared, read_num_samples
            with open_shared(path).begin() as txn:
                n = read_num_samples(txn, path)
                words = [normalize_text(txn.get(label_key(i)).decode("utf-8")) for i in range(1, n + 1)]
        elif path.is_file():
            try:
                words = [normalize_text(line).strip() for line in path.read_text(encoding="utf-8").splitlines()]
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
        else:
            raise FileNotFoundError(f"{path}: no lexicon file or LMDB here")
    words = [w for w in words if w]
    if not words:
        raise ValueError(f"lexicon {source!r} holds no words")
    return words


LEXICON_WEIGHTS = ("type", "token")


def weigh_words(words: list[str], weight: str = "type") -> list[str]:
    """The words a synthetic source draws from uniformly: type = each distinct word once (sorted);
    token = as listed, so a word comes up as often as it occurs (a labels' short function words
    such as 'de' or 'à' then keep their share, which a list of distinct words all but removes)."""
    if weight == "token":
        return list(words)
    if weight == "type":
        return sorted(set(words))
    raise ValueError(f"lexicon weight must be one of {', '.join(LEXICON_WEIGHTS)}, got {weight!r}")


def label_words(labels) -> list[str]:
    """Every word of the labels, in order, repeats included."""
    return [w for label in labels for w in label.split()]


def restrict(words: list[str], alphabet: Alphabet, max_length: int | None = None) -> tuple[list[str], Counter]:
    """Words the alphabet can write (and not longer than max_length), with what was dropped and why."""
    kept, dropped = [], Counter()
    for w in words:
        if alphabet.missing(w):
            dropped["character outside the generator's alphabet"] += 1
        elif max_length and len(w) > max_length:
            dropped[f"longer than {max_length} characters"] += 1
        else:
            kept.append(w)
    return kept, dropped


class NgramSampler:
    """Pseudo-words from a character n-gram model of a word list: out-of-vocabulary text
    with the letter statistics of the language, for generating words never seen."""

    BOUNDARY = "\0"

    def __init__(self, words: list[str], n: int = 3, min_length: int = 2, max_length: int = 12):
        if n < 1:
            raise ValueError("n-gram order must be at least 1")
        self.n, self.min_length, self.max_length = n, min_length, max_length
        self.table: dict[str, Counter] = defaultdict(Counter)
        for w in words:
            padded = self.BOUNDARY * (n - 1) + w + self.BOUNDARY
            for i in range(n - 1, len(padded)):
                self.table[padded[i - n + 1:i]][padded[i]] += 1
        if not self.table:
            raise ValueError("cannot build an n-gram sampler from no words")
        self._choices = {k: (list(c), list(c.values())) for k, c in self.table.items()}

    def sample(self, rng: random.Random) -> str:
        for _ in range(100):
            ctx, out = self.BOUNDARY * (self.n - 1), []
            while len(out) <= self.max_length:
                chars, weights = self._choices.get(ctx[-(self.n - 1):] if self.n > 1 else "", ([self.BOUNDARY], [1]))
                c = rng.choices(chars, weights)[0]
                if c == self.BOUNDARY:
                    break
                out.append(c)
                ctx += c
            if self.min_length <= len(out) <= self.max_length:
                return "".join(out)
        raise RuntimeError("the n-gram model produced no word of an allowed length in 100 tries")
