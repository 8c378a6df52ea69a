"""CTC prefix beam search in log space, optionally constrained to a lexicon.

Best-path (greedy) decoding scores one frame path; a label's probability is the sum
over all its paths, so the most likely label can differ from the collapsed best path
(e.g. two frames each 0.6 blank / 0.4 "a": best path "", but P("a") = 0.64).
Prefix beam search keeps, per candidate label prefix, the log-probability of its paths
ending in a blank and in a non-blank, which is exactly what extending it needs.

With a Lexicon (a character trie) a word may only grow along the trie, and a space
(and the end of the output) may only follow a complete word, so every output word is
a lexicon entry; without a space in the alphabet the whole output is one entry.
"""
from __future__ import annotations

import heapq
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from htr_augment.alphabet import BLANK, Alphabet

from .decoding import greedy_decode

NEG_INF = -math.inf


def _lse(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) without overflow."""
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


def _score(item: tuple[tuple[int, ...], list[float]]) -> float:
    """Total log-probability of a (prefix, [blank-ending, char-ending]) beam entry."""
    return _lse(*item[1])


class _Node:
    __slots__ = ("children", "terminal")

    def __init__(self):
        self.children: dict[int, _Node] = {}
        self.terminal = False


class Lexicon:
    """The allowed words as a trie over alphabet class indices.

    Words with characters the alphabet lacks can never be output; they are left out
    and counted in `skipped` rather than failing the whole list."""

    def __init__(self, words: Iterable[str], alphabet: Alphabet):
        self.root = _Node()
        self.words: set[str] = set()
        self.skipped: list[str] = []
        for word in words:
            if not word or word in self.words:
                continue
            if alphabet.missing(word) or (" " in word):
                self.skipped.append(word)
                continue
            node = self.root
            for c in alphabet.encode(word):
                node = node.children.setdefault(c, _Node())
            node.terminal = True
            self.words.add(word)
        if not self.words:
            raise ValueError("lexicon has no word the alphabet can write")

    @classmethod
    def load(cls, path: str | os.PathLike, alphabet: Alphabet) -> "Lexicon":
        """Every whitespace-separated token of a UTF-8 text file is a word."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: lexicon is not UTF-8 text ({e})") from None
        try:
            return cls(text.split(), alphabet)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.words


def prefix_beam_search(log_probs, beam_width: int = 10, lexicon: Lexicon | None = None,
                       space: int | None = None, prune: float = -12.0,
                       max_candidates: int = 32) -> list[tuple[tuple[int, ...], float]]:
    """N-best labels of one sequence of frame log-probabilities (T, C), blank = 0.

    Returns (label as class indices, log-probability) best first. `prune`: characters
    whose frame log-prob is below it are not tried at that frame, and at most
    `max_candidates` characters per frame are (both only for speed). With a lexicon,
    `space` is the class index of the word separator (None: single words); the best
    label ending on a complete word is always kept, so an unfinished word is returned
    only if no complete label was ever reachable.
    """
    lp = np.asarray(log_probs.detach().cpu() if isinstance(log_probs, torch.Tensor) else log_probs,
                    dtype=np.float64)
    if lp.ndim != 2:
        raise ValueError(f"log_probs must be (T, C), got shape {lp.shape}")
    if beam_width < 1:
        raise ValueError("beam_width must be at least 1")
    # prefix -> [log P(its paths ending in a blank), log P(those ending in its last character)]
    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, NEG_INF]}
    nodes: dict[tuple[int, ...], _Node] = {(): lexicon.root} if lexicon else {}
    k = min(max_candidates, lp.shape[1] - 1)
    for row in lp:
        top = np.argpartition(-row[1:], k - 1)[:k] + 1 if k < lp.shape[1] - 1 else np.arange(1, lp.shape[1])
        cands = [(int(c), float(row[c])) for c in top if row[c] >= prune]
        blank = float(row[BLANK])
        nxt: dict[tuple[int, ...], list[float]] = {}
        for prefix, (pb, pnb) in beams.items():
            total = _lse(pb, pnb)
            entry = nxt.setdefault(prefix, [NEG_INF, NEG_INF])
            entry[0] = _lse(entry[0], total + blank)
            last = prefix[-1] if prefix else None
            if last is not None:  # the last character held over another frame
                entry[1] = _lse(entry[1], pnb + float(row[last]))
            node = nodes.get(prefix)
            for c, lpc in cands:
                if lexicon is not None:
                    if c == space:
                        if not node.terminal:
                            continue
                        child = lexicon.root
                    else:
                        child = node.children.get(c)
                        if child is None:
                            continue
                new = prefix + (c,)
                # a repeated character needs a blank in between, i.e. a path ending in blank
                src = pb if c == last else total
                e = nxt.setdefault(new, [NEG_INF, NEG_INF])
                e[1] = _lse(e[1], src + lpc)
                if lexicon is not None:
                    nodes[new] = child
        beams = dict(heapq.nlargest(beam_width, nxt.items(), key=_score))
        if lexicon is not None:
            # Keep the best label that ends on a complete word even when unfinished words
            # outscore it, so that the search can still end on a lexicon entry.
            if not any(nodes[p].terminal for p in beams):
                complete = [kv for kv in nxt.items() if nodes[kv[0]].terminal]
                if complete:
                    best = max(complete, key=_score)
                    beams[best[0]] = best[1]
            nodes = {p: nodes[p] for p in beams}
    ranked = sorted(((p, s) for p, v in beams.items() if (s := _lse(*v)) > NEG_INF), key=lambda pv: -pv[1])
    if lexicon is not None:
        complete = [pv for pv in ranked if nodes[pv[0]].terminal]
        if complete:
            return complete
    return ranked or [((), NEG_INF)]


def beam_decode(log_probs: torch.Tensor, lengths: torch.Tensor, alphabet: Alphabet, beam_width: int = 10,
                lexicon: Lexicon | None = None, **options) -> list[str]:
    """Prefix beam search over a batch: log_probs (T, B, C), lengths (B,) -> best label per item."""
    lp = log_probs.detach().float().cpu().numpy()
    space = alphabet.encode(" ")[0] if " " in alphabet else None
    out = []
    for b, n in enumerate(lengths.tolist()):
        best = prefix_beam_search(lp[: int(n), b], beam_width, lexicon, space, **options)
        out.append(alphabet.decode(best[0][0]))
    return out


def ctc_decode(log_probs: torch.Tensor, lengths: torch.Tensor, alphabet: Alphabet, beam_width: int = 0,
               lexicon: Lexicon | None = None) -> list[str]:
    """Greedy decoding for beam_width 0, prefix beam search otherwise (a lexicon needs a beam)."""
    if beam_width <= 0:
        if lexicon is not None:
            raise ValueError("a lexicon constraint needs beam search (beam width >= 1)")
        return greedy_decode(log_probs, lengths, alphabet)
    return beam_decode(log_probs, lengths, alphabet, beam_width, lexicon)


def describe_decoder(beam_width: int = 0, lexicon: Lexicon | None = None) -> str:
    if beam_width <= 0:
        return "greedy (best path)"
    return f"prefix beam search, width {beam_width}" + (f", lexicon of {len(lexicon)} words" if lexicon else "")
