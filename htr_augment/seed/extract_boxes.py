"""htr-extract-boxes: cut the cells of scanned grid forms (one handwritten word per box).

Ruled lines are found with OpenCV morphology: an opening with a long horizontal
kernel keeps horizontal rules only, a long vertical kernel the vertical ones;
their union is the grid. The cells are the enclosed regions of the grid's
complement, written in reading order (rows top to bottom, cells left to right)
with a small inset so the rules themselves are left out.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..atomic import write_atomic, write_table_atomic
from ..data.sources import IMAGE_SUFFIXES
from ..images import ImageError, encode_png, read_image


@dataclass
class Cell:
    row: int
    col: int
    x: int
    y: int
    w: int
    h: int


def grid_mask(gray: np.ndarray, line_frac: float = 0.05) -> np.ndarray:
    """255 where a ruled line is: long horizontal or vertical runs of ink."""
    ink = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, 31, 15)
    h, w = gray.shape
    horiz = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (max(10, int(w * line_frac)), 1)))
    vert = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, max(10, int(h * line_frac)))))
    # Close small breaks in scanned rules so that cells are fully enclosed.
    return cv2.dilate(horiz | vert, np.ones((3, 3), np.uint8))


def find_cells(gray: np.ndarray, min_size: int = 16, line_frac: float = 0.05) -> list[Cell]:
    grid = grid_mask(gray, line_frac)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(255 - grid, connectivity=4)
    H, W = gray.shape
    boxes = []
    for i in range(1, n):
        x, y, w, h, area = stats[i]
        touches_border = x == 0 or y == 0 or x + w == W or y + h == H
        # A cell is an enclosed, nearly rectangular region, not the page around the grid.
        if touches_border or w < min_size or h < min_size or area < 0.8 * w * h:
            continue
        boxes.append((x, y, w, h))
    return reading_order(boxes)


def reading_order(boxes: list[tuple[int, int, int, int]]) -> list[Cell]:
    """Group boxes into rows (by vertical centre) and sort each row left to right."""
    if not boxes:
        return []
    boxes = sorted(boxes, key=lambda b: b[1] + b[3] / 2)
    tol = np.median([b[3] for b in boxes]) / 2
    rows: list[list[tuple[int, int, int, int]]] = [[boxes[0]]]
    for b in boxes[1:]:
        centre = b[1] + b[3] / 2
        row_centre = np.mean([r[1] + r[3] / 2 for r in rows[-1]])
        if abs(centre - row_centre) <= tol:
            rows[-1].append(b)
        else:
            rows.append([b])
    return [Cell(r, c, *b) for r, row in enumerate(rows) for c, b in enumerate(sorted(row, key=lambda b: b[0]))]


def crop_cell(gray: np.ndarray, cell: Cell, inset: int) -> np.ndarray:
    i = min(inset, (cell.w - 1) // 2, (cell.h - 1) // 2)
    return gray[cell.y + i: cell.y + cell.h - i, cell.x + i: cell.x + cell.w - i]


def extract(dataset_dir: str | os.PathLike, target_dir: str | os.PathLike, *, inset: int = 4,
            min_size: int = 16, line_frac: float = 0.05, progress: bool = True) -> tuple[int, list[str]]:
    """Write every cell of every form image; returns (cells written, errors)."""
    src, dst = Path(dataset_dir), Path(target_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: not a folder")
    pages = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not pages:
        raise FileNotFoundError(f"{src}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    dst.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    index: list[list] = []
    for page in tqdm(pages, desc="extracting boxes", unit="page", disable=not progress):
        try:
            gray = read_image(str(page))
        except (ImageError, OSError) as e:
            errors.append(str(e))
            continue
        cells = find_cells(gray, min_size, line_frac)
        if not cells:
            errors.append(f"{page}: no grid cells found")
        for k, cell in enumerate(cells, 1):
            name = f"{page.stem}_{k:03d}.png"
            write_atomic(dst / name, encode_png(crop_cell(gray, cell, inset)))
            index.append([name, page.name, cell.row + 1, cell.col + 1, cell.x, cell.y, cell.w, cell.h])
    write_table_atomic(dst / "boxes.tsv", [["file", "page", "row", "col", "x", "y", "width", "height"]] + index)
    return len(index), errors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="htr-extract-boxes",
        description="Find the cells of scanned grid forms (one handwritten word per box) and write each "
                    "cell as an image, in reading order: TARGET_DIR/<page>_<k>.png, plus boxes.tsv "
                    "(file, page, row, column, box). Label the cells by renaming them '<word> (<n>).png' "
                    "and build an LMDB with htr-build-lmdb --folder.")
    p.add_argument("dataset_dir", metavar="DATASET_DIR", help="folder of scanned form images")
    p.add_argument("target_dir", metavar="TARGET_DIR", help="where the cell images go (created)")
    p.add_argument("--inset", type=int, default=4, help="pixels cut from each cell side to drop the rules (default %(default)s)")
    p.add_argument("--min-size", type=int, default=16, help="smallest cell side in pixels (default %(default)s)")
    p.add_argument("--line-frac", type=float, default=0.05,
                   help="shortest ruled line, as a fraction of the page side (default %(default)s)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        n, errors = extract(args.dataset_dir, args.target_dir, inset=args.inset, min_size=args.min_size,
                            line_frac=args.line_frac, progress=not args.no_progress)
    except FileNotFoundError as e:
        print(f"htr-extract-boxes: error: {e}", file=sys.stderr)
        return 2
    for e in errors:
        print(f"htr-extract-boxes: skipped {e}", file=sys.stderr)
    print(f"wrote {n} cells to {args.target_dir}", file=sys.stderr)
    return 0 if n else 1


if __name__ == "__main__":
    sys.exit(main())
