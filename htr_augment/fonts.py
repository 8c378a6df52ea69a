"""Words rendered in handwriting fonts: the naive baseline the GAN is compared against.

Fonts come from installed `fontpkg-*` wheels (OFL handwriting fonts on PyPI, e.g.
fontpkg-caveat, fontpkg-kalam, fontpkg-indie-flower), found through their
`fontpkg.family` entry points. Output follows htr_augment.images (ink = 1).
"""
from __future__ import annotations

import importlib
import random
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .images import resize_to_height, to_tensor


def find_fonts() -> list[Path]:
    """The .ttf/.otf files of every installed fontpkg family, sorted."""
    fonts: list[Path] = []
    for ep in entry_points(group="fontpkg.family"):
        module = importlib.import_module(ep.value)
        root = Path(getattr(module, "ROOT", Path(module.__file__).parent))
        fonts += sorted(p for p in (root / "files").glob("*") if p.suffix.lower() in (".ttf", ".otf"))
    return sorted(fonts)


class FontRenderer:
    """Render words in a random installed handwriting font, size and stroke weight.

    `render(text, style)` is deterministic for a given style id."""

    def __init__(self, height: int = 64, fonts: list[Path] | None = None, seed: int = 0):
        self.fonts = fonts if fonts is not None else find_fonts()
        if not self.fonts:
            raise RuntimeError("no handwriting fonts installed: pip install fontpkg-caveat fontpkg-kalam "
                               "fontpkg-indie-flower")
        self.height, self.seed = height, seed
        self._cache: dict[tuple[Path, int], ImageFont.FreeTypeFont] = {}

    def _font(self, path: Path, size: int) -> ImageFont.FreeTypeFont:
        key = (path, size)
        if key not in self._cache:
            self._cache[key] = ImageFont.truetype(str(path), size)
        return self._cache[key]

    def render_array(self, text: str, style: int) -> np.ndarray:
        rng = random.Random(f"{self.seed}:{style}")
        font = self._font(self.fonts[rng.randrange(len(self.fonts))], rng.choice([40, 48, 56]))
        stroke = rng.choice([0, 0, 1])
        left, top, right, bottom = font.getbbox(text, stroke_width=stroke)
        pad = 8
        img = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 255)
        ImageDraw.Draw(img).text((pad - left, pad - top), text, font=font, fill=0,
                                 stroke_width=stroke, stroke_fill=0)
        arr = np.asarray(img)
        ys, xs = np.nonzero(arr < 128)
        if len(ys):  # crop to the ink with a small margin, as segmented real words are
            m = 4
            arr = arr[max(0, ys.min() - m): ys.max() + m + 1, max(0, xs.min() - m): xs.max() + m + 1]
        return resize_to_height(arr, self.height)

    def render(self, text: str, style: int) -> torch.Tensor:
        return to_tensor(self.render_array(text, style))
