"""htr-generate: write text in generated handwriting, one row per style.

    htr-generate "bonjour le monde" -n 8 -o out.png
    htr-generate "bonjour le monde" --checkpoint runs/gan/last.pt --seed 3 -o out.png
    htr-generate "bonjour le monde" --style mot.png --style autre.png -o out.png

--style writes one row in the hand of one or a few real word images (their mean style;
--style-text gives their texts, one per --style, which sizes them more accurately).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from ..alphabet import AlphabetError
from ..atomic import write_atomic
from ..images import encode_png, read_image, to_tensor, to_uint8
from ..training.checkpoint import CheckpointError
from .word_generator import WordGenerator


def stack_rows(rows: list[np.ndarray], height: int, margin: int = 8) -> np.ndarray:
    """uint8 lines of one height, one under the other on white with `margin` around."""
    width = max(r.shape[1] for r in rows) + 2 * margin
    grid = np.full((len(rows) * (height + margin) + margin, width), 255, np.uint8)
    for i, r in enumerate(rows):
        y = margin + i * (height + margin)
        grid[y:y + r.shape[0], margin:margin + r.shape[1]] = r
    return grid


def style_grid(gen: WordGenerator, text: str, n: int, seed: int, margin: int = 8) -> np.ndarray:
    """uint8 image: `text` written in `n` styles (row i uses style i of `seed`). Every row takes the
    one word layout (gaps, baseline offsets) drawn from `seed`, so rows differ by style alone and a
    seed gives the same image every time."""
    z = gen.sample_z(n, seed)
    rows = [to_uint8(gen.generate_line(text, z=z[i:i + 1], seed=seed)) for i in range(n)]
    return stack_rows(rows, gen.height, margin)


def read_style_images(paths: list[str]) -> list:
    """(1, H, W) tensors (ink = 1) of the --style images; errors name the file."""
    images = []
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"--style {path}: no such file")
        images.append(to_tensor(read_image(path)))  # ImageError names the file if undecodable
    return images


def styled_line(gen: WordGenerator, text: str, images: list, texts: list[str] | None,
                seed: int = 0, margin: int = 8) -> np.ndarray:
    """uint8 image: `text` in the hand of the word `images` (their mean style, as generate(style=)),
    its word layout drawn from `seed`."""
    if not gen.has_style_encoder:
        raise ValueError(f"{gen.info.get('path', 'these weights')}: these generator weights have no style "
                         "encoder (trained before styles from images existed); --style needs weights trained with one")
    z = gen.encode_styles(images, texts).mean(0, keepdim=True)
    return stack_rows([to_uint8(gen.generate_line(text, z=z, seed=seed))], gen.height, margin)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="htr-generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("text", help="the text to write (words are generated one by one in the same style)")
    p.add_argument("--checkpoint", "-c", help="GAN checkpoint (default: the weights shipped in the package)")
    p.add_argument("-n", type=int, help="number of styles (rows) drawn from --seed, default 8")
    p.add_argument("--seed", type=int, default=0, help="seed of the styles and of the words' layout (gaps, "
                   "baseline offsets), default %(default)s: a seed gives the same image every time")
    p.add_argument("--style", action="append", metavar="IMAGE",
                   help="a real word image to imitate (repeat for a few words of one hand)")
    p.add_argument("--style-text", action="append", metavar="TEXT",
                   help="the text of each --style image, in the same order (optional)")
    p.add_argument("--style-temperature", type=float, metavar="T", help="draw the styles at T times the spread of "
                   "the generator's style prior (default: the generator's own; higher: more varied, less legible)")
    p.add_argument("-o", "--out", default="generated.png", help="output PNG, default %(default)s")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    check_args(p, args)
    try:
        images = read_style_images(args.style) if args.style else None
        gen = WordGenerator.load(args.checkpoint, device=args.device)
        gen.style_temperature = gen.resolve_style_temperature(args.style_temperature)
        if images is not None:
            grid = styled_line(gen, args.text, images, args.style_text, args.seed)
        else:
            grid = style_grid(gen, args.text, args.n, args.seed)
    except (CheckpointError, AlphabetError, ValueError, OSError) as e:
        print(f"htr-generate: error: {e}", file=sys.stderr)
        return 2
    write_atomic(args.out, encode_png(grid))
    if args.style:
        print(f"wrote {args.text!r} in the hand of {', '.join(args.style)} to {args.out}", file=sys.stderr)
    else:
        print(f"wrote {args.n} styles of {args.text!r} to {args.out}", file=sys.stderr)
    return 0


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.style and args.style_temperature is not None:
        p.error("--style-temperature spreads the prior's styles; --style takes the hand of the given images")
    if args.style and args.n is not None:
        p.error("-n draws styles from --seed; --style writes one row in the hand of the given images")
    if args.style_text and len(args.style_text) != len(args.style or []):
        p.error(f"--style-text: {len(args.style_text)} texts for {len(args.style or [])} --style images "
                "(give one per image, in the same order)")
    args.n = 8 if args.n is None else args.n
    if args.n < 1:
        p.error("-n must be at least 1")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
