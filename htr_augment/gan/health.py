"""Health of a GAN run, measured on held-out real words (issue 9: judge D by held-out AUC, and
the live generator together with the EMA one).

- D: AUC of its scores, held-out real words vs fresh fakes of the live G, and the margin
  (mean real score - mean fake score). A hinge sum of 2.0 says nothing by itself.
- G (live and EMA): R's CER on the words it was asked to write, mean peak ink (faint or
  blank words show here first), and z-diversity (mean absolute pixel change when only z
  changes, same texts) and, for a generator with letter noise, noise-diversity (only the
  letters' noise changes).
"""
from __future__ import annotations

import torch

from recognizer.decoding import greedy_decode
from recognizer.model import column_keep

from ..metrics import cer


def auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney)."""
    pos, neg = pos.flatten().float()[:, None], neg.flatten().float()[None, :]
    return float((pos > neg).float().mean() + 0.5 * (pos == neg).float().mean())


@torch.no_grad()
def recognizer_cer(R, ink: torch.Tensor, widths: torch.Tensor, texts: list[str], alphabet) -> float:
    """R's greedy CER on images in ink space (ink = 1)."""
    out = R(ink, widths)
    return cer(texts, greedy_decode(out.log_probs, out.lengths, alphabet))


def word_l1(a: torch.Tensor, b: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """(B,): each word pair's mean absolute difference over the word's valid columns (same widths)."""
    return map_l1(a, b, column_keep(a.shape[-1], widths))


def map_l1(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B,): each pair of maps' (B, C, H, W) mean absolute difference over its valid columns
    (valid: (B, W) bool), per channel and row: images, or a network's feature maps."""
    mask = valid.to(a.dtype)[:, None, None, :]
    return ((a - b).abs() * mask).sum((1, 2, 3)) / (mask.sum((1, 2, 3)) * a.shape[1] * a.shape[2])


@torch.no_grad()
def generator_health(G, R, alphabet, tokens, lengths, texts, z, z2) -> dict[str, float]:
    """R-CER, peak ink and z-diversity of generator G (tanh space) on `texts`; with letter noise
    (generator.char_noise), noise_diversity: the change when only the letters' noise changes."""
    was = G.training
    G.eval()
    widths = lengths * G.px_per_char
    fake, fake2 = G(tokens, lengths, z), G(tokens, lengths, z2)
    out = {}
    if getattr(G, "char_noise", 0):
        gen = torch.Generator().manual_seed(8765)
        noise = torch.randn(tokens.shape[0], tokens.shape[1], G.char_noise, generator=gen).to(z.device)
        out["noise_diversity"] = float(word_l1(fake, G(tokens, lengths, z, noise), widths).mean())
    G.train(was)
    ink = (fake + 1) / 2
    return {"r_cer": recognizer_cer(R, ink, widths, texts, alphabet), "peak_ink": float(ink.amax((1, 2, 3)).mean()),
            "z_diversity": float(word_l1(fake, fake2, widths).mean()), **out}


@torch.no_grad()
def discriminator_health(D, real_x, real_w, fake_x, fake_w) -> dict[str, float]:
    was = D.training
    D.eval()
    s_real, s_fake = D(real_x, real_w), D(fake_x, fake_w)
    D.train(was)
    return {"auc": auc(s_real, s_fake), "margin": float(s_real.mean() - s_fake.mean())}
