"""The one image normalisation of the project.

Stored images are 8-bit grayscale (dark ink on a light background), as scanned.
Models see float tensors of shape (1, H, W) with *ink = 1.0 and background = 0.0*,
so zero padding to the right of a word is background, and the GAN's tanh output
maps onto the same range with (x + 1) / 2.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch


class ImageError(ValueError):
    """An image could not be read; the message names the source."""


def decode_image(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Encoded bytes (PNG, JPEG, ...) -> uint8 grayscale array (H, W)."""
    if not data:
        raise ImageError(f"{source}: empty file")
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    if img is None or img.size == 0:
        raise ImageError(f"{source}: not a decodable image")
    return img


def read_image(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        return decode_image(f.read(), path)


def encode_png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - OpenCV fails only on invalid arrays
        raise ImageError("could not encode PNG")
    return buf.tobytes()


def resize_to_height(img: np.ndarray, height: int) -> np.ndarray:
    """Resize to `height` pixels keeping the aspect ratio (width at least 1)."""
    h, w = img.shape[:2]
    if h == height:
        return img
    width = max(1, round(w * height / h))
    interp = cv2.INTER_AREA if height < h else cv2.INTER_CUBIC
    return cv2.resize(img, (width, height), interpolation=interp)


def to_tensor(img: np.ndarray, height: int | None = None) -> torch.Tensor:
    """uint8 grayscale (H, W) -> float32 (1, height, W') with ink = 1, background = 0."""
    if height is not None:
        img = resize_to_height(img, height)
    return torch.from_numpy(1.0 - img.astype(np.float32) / 255.0).unsqueeze(0)


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of `to_tensor`: (1, H, W) or (H, W) float -> uint8 grayscale (H, W)."""
    t = tensor.detach().float().cpu()
    if t.dim() == 3:
        t = t[0]
    return ((1.0 - t.clamp(0, 1)) * 255.0).round().to(torch.uint8).numpy()


def check_ink_quantile(q: float) -> float:
    """An ink quantile (stretch_ink) as a float; a clear error outside (0.5, 1]."""
    q = float(q)
    if not 0.5 < q <= 1.0:
        raise ValueError(f"ink quantile must be in (0.5, 1], got {q}")
    return q


def check_ink_floor(floor: float) -> float:
    """An ink floor (drop_faint_ink) as a float; a clear error outside [0, 0.5)."""
    floor = float(floor)
    if not 0.0 <= floor < 0.5:
        raise ValueError(f"ink floor must be in [0, 0.5), got {floor}")
    return floor


def check_margin(margin: float) -> float:
    """A side margin (a fraction of the image height) as a float; a clear error outside [0, 1]."""
    margin = float(margin)
    if not 0.0 <= margin <= 1.0:
        raise ValueError(f"margin must be in [0, 1] (a fraction of the height), got {margin}")
    return margin


def drop_faint_ink(ink: torch.Tensor, floor: float) -> torch.Tensor:
    """Ink (ink = 1, background = 0) below `floor` made background, the rest rescaled onto (0, 1]:
    a generator's grey haze and soft stroke edges removed, full ink kept full."""
    floor = check_ink_floor(floor)
    return ((ink - floor) / (1.0 - floor)).clamp(0, 1) if floor else ink


def stretch_ink(ink: torch.Tensor, quantile: float) -> torch.Tensor:
    """An image (1, H, W) in ink space (ink = 1) with its ink scaled so that the `quantile` of its
    pixel values becomes full ink, clipped to 1: faint strokes made as dark as a pen's, the
    background (0) unchanged. An image whose quantile is below 0.05 (next to no ink) is returned as is."""
    return stretch_ink_batch(ink[None], torch.tensor([ink.shape[-1]]), quantile)[0]


def stretch_ink_batch(ink: torch.Tensor, widths: torch.Tensor, quantile: float) -> torch.Tensor:
    """stretch_ink for each word of a padded batch (B, 1, H, W) in ink space, its level measured
    over its own `widths[i]` columns (not the padding). The levels are constants to autograd: a
    gradient through this reaches the strokes' shapes, not their darkness."""
    q = check_ink_quantile(quantile)
    levels = torch.stack([torch.quantile(ink[i, :, :, :max(int(w), 1)].detach().float().flatten(), q)
                          for i, w in enumerate(widths)])
    levels = torch.where(levels < 0.05, torch.ones_like(levels), levels).to(ink.dtype)
    return (ink / levels[:, None, None, None]).clamp(0, 1)


def otsu_ink(img: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels of a uint8 grayscale image darker than its Otsu threshold (capped at
    200, so a blank or all-grey image is not all ink): the strokes, grey paper left out."""
    thr, _ = cv2.threshold(img, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return img <= min(thr, 200)  # cv2: above the threshold is background


def ink_mask(img: np.ndarray) -> np.ndarray:
    """(H, W) bool: ink pixels of a uint8 grayscale image (otsu_ink, so grey paper is not ink).

    Horizontal lines longer than twice the image height are left out, dashed ones included
    (closed first): ruled paper, as in Copiste, would otherwise put ink in every column
    and on one row of every word; handwriting seldom runs that straight for that long."""
    ink = otsu_ink(img).astype(np.uint8)
    bridged = cv2.morphologyEx(ink, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (9, 1)))
    rules = cv2.morphologyEx(bridged, cv2.MORPH_OPEN,
                             cv2.getStructuringElement(cv2.MORPH_RECT, (max(32, 2 * img.shape[0]), 1)))
    return (ink & (1 - rules)).astype(bool)


def pad_batch(images: list[torch.Tensor], multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (1, H, W_i) tensors into (B, 1, H, W_max) padded with background (0).

    `multiple` rounds W_max up so that a network's down-sampling divides it."""
    heights = {im.shape[-2] for im in images}
    if len(heights) != 1:
        raise ValueError(f"images in a batch must share one height, got {sorted(heights)}")
    widths = torch.tensor([im.shape[-1] for im in images], dtype=torch.long)
    w_max = int(widths.max())
    w_max = -(-w_max // multiple) * multiple
    out = images[0].new_zeros((len(images), 1, heights.pop(), w_max))
    for i, im in enumerate(images):
        out[i, :, :, : im.shape[-1]] = im
    return out, widths
