"""htr-generate: write text in generated handwriting, one row per style.

    htr-generate "bonjour le monde" -n 8 -o out.png
    htr-generate "bonjour le monde" --checkpoint runs/gan/last.pt --seed 3 -o out.png
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from ..alphabet import AlphabetError
from ..atomic import write_atomic
from ..images import encode_png, to_uint8
from ..training.checkpoint import CheckpointError
from .word_generator import WordGenerator


def style_grid(gen: WordGenerator, text: str, n: int, seed: int, margin: int = 8) -> np.ndarray:
    """uint8 image: `text` written in `n` styles (row i uses style i of `seed`)."""
    z = gen.sample_z(n, seed)
    rows = [to_uint8(gen.generate_line(text, z=z[i:i + 1])) for i in range(n)]
    width = max(r.shape[1] for r in rows) + 2 * margin
    grid = np.full((n * (gen.height + margin) + margin, width), 255, np.uint8)
    for i, r in enumerate(rows):
        y = margin + i * (gen.height + margin)
        grid[y:y + r.shape[0], margin:margin + r.shape[1]] = r
    return grid


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="htr-generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("text", help="the text to write (words are generated one by one in the same style)")
    p.add_argument("--checkpoint", "-c", help="GAN checkpoint (default: the weights shipped in the package)")
    p.add_argument("-n", type=int, default=8, help="number of styles (rows), default %(default)s")
    p.add_argument("--seed", type=int, default=0, help="style seed, default %(default)s")
    p.add_argument("-o", "--out", default="generated.png", help="output PNG, default %(default)s")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("-n must be at least 1")
    try:
        gen = WordGenerator.load(args.checkpoint, device=args.device)
        grid = style_grid(gen, args.text, args.n, args.seed)
    except (CheckpointError, AlphabetError, ValueError) as e:
        print(f"htr-generate: error: {e}", file=sys.stderr)
        return 2
    write_atomic(args.out, encode_png(grid))
    print(f"wrote {args.n} styles of {args.text!r} to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
