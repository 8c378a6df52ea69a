"""The recognizer's CTC loss, shared by its trainer and by the GAN (R on real and generated words)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .model import RecognizerOutput


def ctc_losses(out: RecognizerOutput, targets: torch.Tensor, target_lengths: torch.Tensor,
               shortcut_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(total, main, shortcut): CTC summed over each label and averaged over the batch.

    log_probs are float32 (the model casts them); impossible alignments (a label longer
    than its frames) give zero loss instead of inf."""
    batch = target_lengths.numel()

    def ctc(log_probs):
        return F.ctc_loss(log_probs, targets, out.lengths, target_lengths, blank=0,
                          reduction="sum", zero_infinity=True) / batch

    main = ctc(out.log_probs)
    if out.aux_log_probs is None or shortcut_weight == 0:
        return main, main, None
    aux = ctc(out.aux_log_probs)
    return main + shortcut_weight * aux, main, aux
