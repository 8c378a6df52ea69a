"""One GAN checkpoint's words in two prior styles, four letter noises each (generator.char_noise).

    python tools/letter_noise_grid.py runs/gan_v19/last.pt OUT.png [--ema] [--noise-scale S]

Rows 1-4: style 1 with letter noises 1-4; rows 5-8: style 2. G's own width (16 px per letter, no
natural width), style temperature 1.5, ink stretched as the shipped weights are (0.99 quantile).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from htr_augment.gan.data import encode_texts
from htr_augment.gan.export import export_generator
from htr_augment.gan.word_generator import WordGenerator
from htr_augment.images import stretch_ink

TEXTS = ["Montréal", "belle", "ville", "Québec", "une"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--ema", action="store_true", help="the EMA generator (default: the live one)")
    p.add_argument("--noise-scale", type=float, default=1.0, help="letter noise times this (default 1: as trained)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_generator(args.checkpoint, Path(tmp) / "g.pt", live=not args.ema, style_temperature=1.5)
        gen = WordGenerator.load(path)
    G = gen.generator
    tokens, lengths, _ = encode_texts(TEXTS, gen.alphabet)
    rows = []
    for style in range(2):
        eps = torch.randn(1, gen.z_dim, generator=torch.Generator().manual_seed(style))
        z = gen.prior_style(eps).expand(len(TEXTS), -1)
        for n in range(4):
            noise = (torch.randn(len(TEXTS), tokens.shape[1], G.char_noise, generator=torch.Generator().manual_seed(100 + n))
                     * args.noise_scale if G.char_noise else None)
            with torch.no_grad():
                ink = (G(tokens, lengths, z, noise) + 1) / 2
            parts = []
            for i, L in enumerate(lengths.tolist()):
                word = stretch_ink(ink[i, :, :, :L * G.px_per_char].clamp(0, 1), 0.99)[0].numpy()
                parts += [word, np.zeros((word.shape[0], 8))]
            rows.append(np.concatenate(parts, 1))
    width = max(r.shape[1] for r in rows)
    grid = np.concatenate([np.pad(r, ((0, 3), (0, width - r.shape[1]))) for r in rows])
    img = Image.fromarray((255 - 255 * grid.clip(0, 1)).astype(np.uint8))
    img.resize((img.width * 2, img.height * 2)).save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
