import os
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
COPISTE = Path(os.environ.get("HTR_COPISTE", REPO.parent / "shared" / "data" / "copiste"))


@pytest.fixture(scope="session")
def copiste() -> Path:
    """The real Copiste d'un jour lines (CC BY 4.0, BAnQ), read in place from ../shared."""
    if not (COPISTE / "lines.tsv").is_file():
        pytest.skip(f"Copiste data not found at {COPISTE} (set HTR_COPISTE)")
    return COPISTE


def draw_word(text: str, height: int = 32, px_per_char: int = 16) -> np.ndarray:
    """A legible grayscale word image (dark ink on white) for fixtures."""
    img = np.full((height, max(8, px_per_char * len(text) + 8)), 255, np.uint8)
    cv2.putText(img, text, (4, int(height * 0.75)), cv2.FONT_HERSHEY_SIMPLEX, height / 45, 0, 2)
    return img


def write_gt(folder: Path, words: list[str], **kw) -> Path:
    """Write word images and a `path<TAB>label` ground-truth file; returns the GT path."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, w in enumerate(words):
        name = f"w{i:04d}.png"
        cv2.imwrite(str(folder / name), draw_word(w, **kw))
        lines.append(f"{name}\t{w}")
    gt = folder / "gt.txt"
    gt.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return gt
