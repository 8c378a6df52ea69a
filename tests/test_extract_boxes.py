"""htr-extract-boxes on grid forms the test draws itself."""
import csv
import subprocess
import sys

import cv2
import numpy as np

from htr_augment.images import read_image
from htr_augment.seed.extract_boxes import find_cells


def draw_form(rows=3, cols=4, cell=(150, 70), origin=(60, 80), seed=0, skew_px=0):
    """A white page with a ruled grid; cell k (reading order) holds a bar 6*(k+1) px wide."""
    rng = np.random.default_rng(seed)
    cw, ch = cell
    page = np.full((origin[1] * 2 + rows * ch, origin[0] * 2 + cols * cw), 245, np.uint8)
    page = (page - rng.integers(0, 12, page.shape)).astype(np.uint8)  # paper noise
    x0, y0 = origin
    for r in range(rows + 1):
        cv2.line(page, (x0, y0 + r * ch), (x0 + cols * cw, y0 + r * ch + skew_px), 20, 2)
    for c in range(cols + 1):
        cv2.line(page, (x0 + c * cw, y0), (x0 + c * cw, y0 + rows * ch), 20, 2)
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        x, y = x0 + c * cw + 20, y0 + r * ch + 25
        cv2.rectangle(page, (x, y), (x + 6 * (k + 1) - 1, y + 15), 0, -1)  # the "handwriting"
    cv2.putText(page, "FORM 12", (x0, 40), cv2.FONT_HERSHEY_SIMPLEX, 1, 0, 2)  # text outside the grid
    return page


def bar_width(cell_img):
    cols = (cell_img < 100).any(axis=0)
    return int(cols.sum())


def test_cells_found_in_reading_order():
    cells = find_cells(draw_form())
    assert [(c.row, c.col) for c in cells] == [(r, c) for r in range(3) for c in range(4)]


def test_cli_writes_each_cell_in_reading_order(tmp_path):
    src, dst = tmp_path / "forms", tmp_path / "cells"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), draw_form())
    cv2.imwrite(str(src / "b.jpg"), draw_form(rows=2, cols=5, seed=1, skew_px=2), [cv2.IMWRITE_JPEG_QUALITY, 90])
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    r = subprocess.run([sys.executable, "-m", "htr_augment.seed.extract_boxes", str(src), str(dst), "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "broken.png" in r.stderr and "wrote 22 cells" in r.stderr
    for stem, n in (("a", 12), ("b", 10)):
        widths = [bar_width(read_image(str(dst / f"{stem}_{k:03d}.png"))) for k in range(1, n + 1)]
        assert widths == [6 * (k + 1) for k in range(n)], (stem, widths)
        img = read_image(str(dst / f"{stem}_001.png"))
        assert (img[:, :3] > 150).all() and (img[:3, :] > 150).all()  # the rules were cut away
    rows = list(csv.DictReader(open(dst / "boxes.tsv", encoding="utf-8"), delimiter="\t"))
    assert len(rows) == 22 and rows[5]["file"] == "a_006.png" and (rows[5]["row"], rows[5]["col"]) == ("2", "2")


def test_folder_without_grid_exits_nonzero(tmp_path):
    src = tmp_path / "blank"
    src.mkdir()
    cv2.imwrite(str(src / "empty.png"), np.full((200, 300), 255, np.uint8))
    r = subprocess.run([sys.executable, "-m", "htr_augment.seed.extract_boxes", str(src), str(tmp_path / "o"),
                        "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 1 and "no grid cells found" in r.stderr
