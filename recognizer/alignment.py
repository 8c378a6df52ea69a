"""CTC forced alignment: the single most likely frame path of a *known* label.

Viterbi over the standard CTC trellis: the label is extended with blanks around and
between its characters (b c1 b c2 ... cL b, 2L+1 states); a path may stay on a state,
move to the next one, or skip a blank between two *different* characters, and must
end on the last character or the final blank. Where each character sits in time is
what line-to-word segmentation needs (see recognizer.segment).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from htr_augment.alphabet import BLANK


class AlignmentError(ValueError):
    """No CTC path exists (too few frames for the label)."""


@dataclass
class Alignment:
    path: np.ndarray  # (T,) class per frame, BLANK on blank frames
    char_index: np.ndarray  # (T,) position in the label of the frame's character, -1 on blanks
    frame_logp: np.ndarray  # (T,) log-probability of the path's class at each frame

    @property
    def score(self) -> float:
        """Log-probability of the whole path."""
        return float(self.frame_logp.sum())

    @property
    def mean_logp(self) -> float:
        """Per-frame average log-probability: comparable across line lengths."""
        return float(self.frame_logp.mean()) if len(self.frame_logp) else 0.0

    def char_spans(self) -> list[tuple[int, int]]:
        """[first frame, last frame + 1) of each label character, in label order."""
        n = int(self.char_index.max()) + 1 if len(self.char_index) else 0
        frames = np.arange(len(self.char_index))
        spans = []
        for k in range(n):
            at = frames[self.char_index == k]
            spans.append((int(at[0]), int(at[-1]) + 1))
        return spans


def min_frames(targets: Sequence[int]) -> int:
    """Frames a CTC path of `targets` needs: one per character plus a blank between repeats."""
    return len(targets) + sum(a == b for a, b in zip(targets, targets[1:]))


def forced_align(log_probs, targets: Sequence[int], blank: int = BLANK) -> Alignment:
    """Viterbi alignment of `targets` (class indices, no blanks) to log_probs (T, C)."""
    lp = np.asarray(log_probs.detach().float().cpu() if isinstance(log_probs, torch.Tensor) else log_probs,
                    dtype=np.float64)
    if lp.ndim != 2:
        raise ValueError(f"log_probs must be (T, C), got shape {lp.shape}")
    targets = [int(t) for t in targets]
    T, L = lp.shape[0], len(targets)
    if blank in targets:
        raise ValueError("targets must not contain the blank")
    if T < min_frames(targets):
        raise AlignmentError(f"{T} frames cannot hold a label of {L} characters (needs {min_frames(targets)})")
    ext = np.full(2 * L + 1, blank, dtype=np.int64)
    ext[1::2] = targets
    S = len(ext)
    # a state may be entered from two back only for a character differing from the one before the blank
    skip = np.zeros(S, dtype=bool)
    skip[3::2] = ext[3::2] != ext[1:-2:2]
    alpha = np.full(S, -np.inf)
    alpha[0] = lp[0, blank]
    if L:
        alpha[1] = lp[0, ext[1]]
    back = np.zeros((T, S), dtype=np.int8)  # how many states back the best predecessor is
    for t in range(1, T):
        prev1 = np.concatenate(([-np.inf], alpha[:-1]))
        prev2 = np.where(skip, np.concatenate(([-np.inf, -np.inf], alpha[:-2])), -np.inf)
        cand = np.stack([alpha, prev1, prev2])
        back[t] = cand.argmax(axis=0)
        alpha = cand[back[t], np.arange(S)] + lp[t, ext]
    ends = [S - 1] + ([S - 2] if L else [])
    s = max(ends, key=lambda e: alpha[e])
    if not np.isfinite(alpha[s]):
        raise AlignmentError(f"no CTC path for a label of {L} characters in {T} frames")
    states = np.empty(T, dtype=np.int64)
    for t in range(T - 1, -1, -1):
        states[t] = s
        s -= int(back[t, s])  # int8 arithmetic would overflow past state 127
    path = ext[states]
    char_index = np.where(states % 2 == 1, (states - 1) // 2, -1)
    return Alignment(path, char_index, lp[np.arange(T), path])
