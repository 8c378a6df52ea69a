"""CTC decoding of recognizer outputs (log_probs (T, B, C), lengths (B,)) into strings."""
from __future__ import annotations

import torch

from htr_augment.alphabet import BLANK, Alphabet


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, alphabet: Alphabet) -> list[str]:
    """Best class per frame, repeats collapsed, blanks dropped (best-path decoding)."""
    best = log_probs.argmax(dim=-1).t().cpu()  # (B, T)
    out = []
    for seq, n in zip(best.tolist(), lengths.tolist()):
        seq = seq[:n]
        out.append(alphabet.decode(c for i, c in enumerate(seq) if c != BLANK and (i == 0 or c != seq[i - 1])))
    return out
