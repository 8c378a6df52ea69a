"""Contextual loss (Mechrez, Talmi & Zelnik-Manor, ECCV 2018), masked to each word's valid columns.

A new text written in the style of a real word x cannot match x pixel by pixel (other letters,
other places), so a pixel loss only asks for x's size, slant and ink. The contextual loss asks
instead that every local feature of x (a stroke, a loop, a letter part, in the feature space of
the writer classifier W) have a close match *somewhere* in the generated word: letter shapes
without alignment. HiGAN+ uses it for the same purpose.

For word b, with generated-word features g_i and style-word features s_j (cosine similarity
after centring on the style word's mean feature):
    d_ij = (1 - cos(g_i, s_j)) / 2,   r_ij = d_ij / (min_k d_ik + eps)
    a_ij = exp((1 - r_ij) / h) / sum_k exp((1 - r_ik) / h)          (k over s's positions)
    CX_b = mean_j max_i a_ij,          loss = mean_b -log(CX_b + eps)
"""
from __future__ import annotations

import torch


def contextual_loss(gen: torch.Tensor, gen_valid: torch.Tensor, style: torch.Tensor, style_valid: torch.Tensor,
                    bandwidth: float = 0.5, eps: float = 1e-5) -> torch.Tensor:
    """gen (B, C, H, Wg), style (B, C, H', Ws) feature maps; *_valid (B, W) bool masks of the valid
    columns of each. Returns the mean contextual loss over the batch (0 when every style feature
    has an exact match in the generated word)."""
    B, C = gen.shape[:2]
    g_mask = gen_valid[:, None, :].expand(B, gen.shape[2], -1).reshape(B, -1)  # (B, Ng)
    s_mask = style_valid[:, None, :].expand(B, style.shape[2], -1).reshape(B, -1)  # (B, Ns)
    g = gen.reshape(B, C, -1)
    s = style.reshape(B, C, -1)
    sm = s_mask[:, None, :].to(s.dtype)
    mean = (s * sm).sum(-1, keepdim=True) / sm.sum(-1, keepdim=True).clamp(min=1)  # the style word's own mean
    g = torch.nn.functional.normalize(g - mean, dim=1)
    s = torch.nn.functional.normalize(s - mean, dim=1)
    d = (1 - torch.bmm(g.transpose(1, 2), s)) / 2  # (B, Ng, Ns)
    d = d.masked_fill(~s_mask[:, None, :], 2.0)  # beyond any cosine distance (<= 1), and finite: no inf*0 in backward
    r = d / (d.amin(dim=2, keepdim=True) + eps)
    w = torch.exp((1 - r) / bandwidth).masked_fill(~s_mask[:, None, :], 0.0)
    a = w / w.sum(dim=2, keepdim=True).clamp(min=torch.finfo(w.dtype).tiny)
    a = a.masked_fill(~g_mask[:, :, None], 0.0)  # a generated padding position matches nothing
    best = a.amax(dim=1)  # (B, Ns): each style feature's closest match in the generated word
    cx = (best * s_mask).sum(1) / s_mask.sum(1).clamp(min=1)
    return -torch.log(cx + eps).mean()
