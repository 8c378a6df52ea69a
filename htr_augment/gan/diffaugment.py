"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for the discriminator.

Applied to real and generated words alike, so that D cannot tell them apart by the
augmentation and G is not pushed to reproduce it. Images are in the GAN's space:
background = -1, ink = +1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("translation", "cutout", "color")


def translation(x: torch.Tensor, widths: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its height (both axes), filling with background."""
    B, _, H, W = x.shape
    max_shift = ratio * H
    shift = (torch.rand(B, 2, device=x.device) * 2 - 1) * max_shift  # pixels (dx, dy)
    theta = torch.zeros(B, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    theta[:, 0, 2] = -2 * shift[:, 0] / W
    theta[:, 1, 2] = -2 * shift[:, 1] / H
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, padding_mode="zeros", align_corners=False) - 1


def cutout(x: torch.Tensor, widths: torch.Tensor, ratio: float = 0.25) -> torch.Tensor:
    """Blank a random square (side = 2 * ratio * height) centred inside each word's width."""
    B, _, H, W = x.shape
    ch = max(1, int(H * ratio * 2))
    cw = ch
    cy = (torch.rand(B, device=x.device) * H).long()
    cx = (torch.rand(B, device=x.device) * widths.to(x.device).clamp(min=1)).long()
    ys = torch.arange(H, device=x.device)[None, :, None]
    xs = torch.arange(W, device=x.device)[None, None, :]
    inside = ((ys - cy[:, None, None]).abs() <= ch // 2) & ((xs - cx[:, None, None]).abs() <= cw // 2)
    return torch.where(inside[:, None], torch.zeros_like(x), x)


def color(x: torch.Tensor, widths: torch.Tensor, strength: float = 0.25) -> torch.Tensor:
    """Random brightness and contrast per image."""
    B = x.shape[0]
    brightness = (torch.rand(B, 1, 1, 1, device=x.device) * 2 - 1) * strength
    contrast = 1 + (torch.rand(B, 1, 1, 1, device=x.device) * 2 - 1) * strength
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast + mean + brightness


_OPS = {"translation": translation, "cutout": cutout, "color": color}


def diff_augment(x: torch.Tensor, widths: torch.Tensor, policy: list[str] | tuple[str, ...]) -> torch.Tensor:
    for name in policy:
        if name not in _OPS:
            raise ValueError(f"unknown DiffAugment policy {name!r} (known: {', '.join(POLICIES)})")
        x = _OPS[name](x, widths)
    return x
