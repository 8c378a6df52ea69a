"""How real writers lay words out on a line, measured once and stored with the weights.

    python -m htr_augment.line_stats --lines data/lines_train.lmdb --words data/words/train.lmdb \
        --out htr_augment/weights/line_stats.json

The word LMDB of recognizer.segment holds each word as a crop of its line (full line
height, trimmed to the ink, `pad` white columns each side) and names its line in its
source key (``lines.tsv:24#word3``); each crop is found again in its stored line by its
column sums, which gives the word boxes. On every line (ruled lines removed, see
htr_augment.images.ink_mask), with the x-height h of the line (the core band of its
row ink profile):

- gap_line: the line's median inter-word gap / h (a writer's spacing);
- gap_rel: each gap / its line's median gap (the spread within a line);
- baseline_offset: each word's baseline (bottom of its own core band) minus a straight
  line fitted through the baselines of the line's words, / h (positive = lower);
- slant_jitter: each word's slant minus the line's median slant, degrees (positive = more
  to the right); words of fewer than three letters are left out of both;
- xheight_ratio, core_mid: h / line height and the core band's middle / line height.

Each is stored as its 1st..99th percentiles (outliers of a failed cut left out), sampled
by inverse CDF. Estimates per word (a short word's core band, its slant) carry noise, so
the jitters are upper bounds of the writers' own.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import random
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import __version__
from .atomic import write_atomic
from .data.lmdb_format import image_key, label_key, open_shared, read_meta, read_num_samples, source_key
from .images import decode_image, ink_mask

PACKAGE_STATS = Path(__file__).resolve().parent / "weights" / "line_stats.json"
QUANTITIES = ("gap_line", "gap_rel", "baseline_offset", "slant_jitter")
PERCENTILES = np.arange(1, 100)
SLANT_ANGLES = np.arange(-45, 46, 3)
MIN_LETTERS = 3  # words shorter than this give no baseline or slant of their own


def core_band(mask: np.ndarray) -> tuple[int, int] | None:
    """(top, bottom) rows, bottom exclusive, of the x-height band of an ink mask: from the first
    to the last row whose ink count is at least half the densest row's (ascenders and
    descenders are thin, the core is dense; rows inside the band may dip below, as between
    the top and bottom strokes of an o). None without ink."""
    profile = np.convolve(mask.sum(axis=1).astype(float), np.ones(3) / 3, mode="same")
    if profile.max() <= 0:
        return None
    rows = np.flatnonzero(profile >= 0.5 * profile.max())
    return int(rows[0]), int(rows[-1]) + 1


def shear(img: np.ndarray, angle: float, pivot: float, fill: float = 0) -> np.ndarray:
    """Shift row y by tan(angle) * (pivot - y) columns: angle > 0 leans the strokes to the
    right, rows at `pivot` (the baseline) stay. The image widens to keep every pixel."""
    if abs(angle) < 1e-6:
        return img
    t = math.tan(math.radians(angle))
    h, w = img.shape[:2]
    shifts = (t * (pivot - 0), t * (pivot - (h - 1)))
    off = -min(shifts)
    new_w = w + int(math.ceil(max(shifts) - min(shifts)))
    m = np.float32([[1, -t, t * pivot + off], [0, 1, 0]])
    return cv2.warpAffine(img, m, (new_w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=fill)


def slant(mask: np.ndarray) -> float | None:
    """Slant in degrees (positive = leaning right): the shear that makes the strokes most
    vertical, i.e. maximises the sum of squared column ink counts. None with too little ink."""
    ys, xs = np.nonzero(mask)
    if len(ys) < 20:
        return None
    best, best_score = None, -1.0
    for a in SLANT_ANGLES:  # undo a candidate slant a: shift rows back by tan(a) * (bottom - y)
        cols = np.round(xs - math.tan(math.radians(a)) * (mask.shape[0] - 1 - ys)).astype(int)
        score = float((np.bincount(cols - cols.min()) ** 2).sum())
        if score > best_score:
            best, best_score = float(a), score
    return best


def locate_words(line: np.ndarray, crops: list[np.ndarray], pad: int) -> list[tuple[int, int]] | None:
    """(x0, x1) of each word crop (recognizer.segment: a column range of the line, `pad`
    white columns added) in the line, in order; None if one is not found."""
    sig = line.astype(np.int64).sum(axis=0)
    boxes, start = [], 0
    for crop in crops:
        core = crop[:, pad:crop.shape[1] - pad] if pad else crop
        w = core.shape[1]
        if w < 1 or core.shape[0] != line.shape[0] or w > len(sig) - start:
            return None
        windows = np.lib.stride_tricks.sliding_window_view(sig[start:], w)
        hits = np.flatnonzero((windows == core.astype(np.int64).sum(axis=0)).all(axis=1))
        found = next((start + int(h) for h in hits if np.array_equal(line[:, start + h:start + h + w], core)), None)
        if found is None:
            return None
        boxes.append((found, found + w))
        start = found + w
    return boxes


@dataclass
class LineMeasure:
    """What one real line contributes (gaps and offsets in its x-heights)."""
    xheight: float
    xheight_ratio: float
    core_mid: float
    gaps: list[float]
    offsets: list[float] = field(default_factory=list)
    slants: list[float] = field(default_factory=list)


def measure_line(line: np.ndarray, boxes: list[tuple[int, int]], words: list[str]) -> LineMeasure | None:
    """Gaps, baseline offsets and slant deviations of one line given its word boxes."""
    mask = ink_mask(line)
    band = core_band(mask)
    if band is None or band[1] - band[0] < 3 or len(boxes) < 2:
        return None
    xh = float(band[1] - band[0])
    gaps = [(b[0] - a[1]) / xh for a, b in zip(boxes, boxes[1:])]
    centers, baselines, slants = [], [], []
    for (x0, x1), word in zip(boxes, words):
        if sum(c.isalpha() for c in word) < MIN_LETTERS:
            continue
        wb, ws = core_band(mask[:, x0:x1]), slant(mask[:, x0:x1])
        if wb is not None:
            centers.append((x0 + x1) / 2)
            baselines.append(wb[1])
        if ws is not None:
            slants.append(ws)
    offsets: list[float] = []
    if len(baselines) >= 3:  # a straight baseline through the words (lines may run askew)
        fit = np.polyfit(centers, baselines, 1)
        offsets = list((np.array(baselines) - np.polyval(fit, centers)) / xh)
    jitter = list(np.array(slants) - np.median(slants)) if len(slants) >= 3 else []
    h = line.shape[0]
    return LineMeasure(xh, xh / h, (band[0] + band[1]) / 2 / h, gaps, offsets, jitter)


@dataclass
class LineStats:
    """Measured layout distributions (percentile tables) and how they were measured."""
    quantiles: dict[str, list[float]]
    xheight_ratio: float
    core_mid: float
    info: dict = field(default_factory=dict)

    def sample(self, name: str, rng: random.Random) -> float:
        """One draw of a quantity by inverse CDF, linear between the stored percentiles."""
        q = self.quantiles[name]
        return float(np.interp(rng.random() * (len(q) - 1), np.arange(len(q)), q))

    def sample_layout(self, n_words: int, rng: random.Random) -> "LineLayout":
        """Gaps (n - 1), baseline offsets and slant changes (n) for a line of n words."""
        spacing = self.sample("gap_line", rng)
        gaps = [spacing * self.sample("gap_rel", rng) for _ in range(n_words - 1)]
        offsets = [self.sample("baseline_offset", rng) for _ in range(n_words)]
        slants = [self.sample("slant_jitter", rng) for _ in range(n_words)]
        return LineLayout(gaps, offsets, slants)

    def to_json(self) -> str:
        return json.dumps({"format": "htr-augment-line-stats", "version": 1, "xheight_ratio": self.xheight_ratio,
                           "core_mid": self.core_mid, "percentiles": PERCENTILES.tolist(),
                           "quantiles": self.quantiles, **self.info}, ensure_ascii=False, indent=1) + "\n"

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "LineStats":
        """Read stats written by `measure_stats`; default: the ones shipped in the package."""
        path = Path(path) if path else PACKAGE_STATS
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no line statistics here (python -m htr_augment.line_stats "
                                    "measures them)") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if data.get("format") != "htr-augment-line-stats":
            raise ValueError(f"{path}: not a line-statistics file (format {data.get('format')!r})")
        missing = [q for q in QUANTITIES if q not in data.get("quantiles", {})]
        if missing:
            raise ValueError(f"{path}: line statistics lack {', '.join(missing)}")
        info = {k: v for k, v in data.items()
                if k not in ("format", "version", "xheight_ratio", "core_mid", "percentiles", "quantiles")}
        return cls({k: [float(x) for x in v] for k, v in data["quantiles"].items()}, float(data["xheight_ratio"]),
                   float(data["core_mid"]), {"path": str(path), **info})


@dataclass
class LineLayout:
    """How the words of one line are set: gaps (n - 1) and baseline offsets (n) in x-heights,
    slant changes (n) in degrees."""
    gaps: list[float]
    offsets: list[float]
    slants: list[float]


def _read_lines(txn, path: str) -> dict[str, int]:
    n = read_num_samples(txn, path)
    out = {}
    for i in range(1, n + 1):
        src = txn.get(source_key(i))
        out[src.decode("utf-8") if src else f"{path}#{i}"] = i
    return out


def measure_stats(lines: str | os.PathLike, words: str | os.PathLike, max_lines: int | None = None,
                  seed: int = 0) -> tuple[LineStats, dict]:
    """Measure LineStats on the lines that the word LMDB `words` was cut from.

    Returns (stats, counts): counts says how many lines were measured and why others were not."""
    lines, words = str(lines), str(words)
    wenv, lenv = open_shared(words), open_shared(lines)
    with wenv.begin() as txn:
        meta = read_meta(txn)
        pad = int(meta.get("segmentation", {}).get("pad", 0))
        by_line: dict[str, list[int]] = defaultdict(list)
        for i in range(1, read_num_samples(txn, words) + 1):
            src = txn.get(source_key(i)).decode("utf-8")
            by_line[src.rsplit("#word", 1)[0]].append(i)
    with lenv.begin() as txn:
        line_index = _read_lines(txn, lines)
    keys = [k for k in by_line if k in line_index]
    counts = {"lines_with_words": len(by_line), "not_in_lines_lmdb": len(by_line) - len(keys)}
    if max_lines and len(keys) > max_lines:
        keys = sorted(random.Random(seed).sample(keys, max_lines), key=lambda k: line_index[k])
    measures, failed = [], defaultdict(int)
    for key in keys:
        with wenv.begin() as wt, lenv.begin() as lt:
            line = decode_image(lt.get(image_key(line_index[key])), f"{lines}#{line_index[key]}")
            crops = [decode_image(wt.get(image_key(i)), f"{words}#{i}") for i in by_line[key]]
            texts = [wt.get(label_key(i)).decode("utf-8") for i in by_line[key]]
        boxes = locate_words(line, crops, pad)
        if boxes is None:
            failed["word crop not found in its line"] += 1
            continue
        m = measure_line(line, boxes, texts)
        if m is None:
            failed["one word or no core band"] += 1
            continue
        measures.append(m)
    if not measures:
        raise ValueError(f"{words}: no line could be measured ({dict(failed)})")
    medians = [float(np.median(m.gaps)) for m in measures]
    values = {
        "gap_line": medians,
        "gap_rel": [g / med for m, med in zip(measures, medians) if med > 0 for g in m.gaps],
        "baseline_offset": [o for m in measures for o in m.offsets],
        "slant_jitter": [s for m in measures for s in m.slants],
    }
    quantiles = {k: np.percentile(v, PERCENTILES).round(4).tolist() for k, v in values.items()}
    summary = {k: {"n": len(v), "median": round(float(np.median(v)), 4), "mean": round(float(np.mean(v)), 4),
                   "p10": round(float(np.percentile(v, 10)), 4), "p90": round(float(np.percentile(v, 90)), 4)}
               for k, v in values.items()}
    counts.update({"lines_measured": len(measures), "lines_skipped": dict(failed),
                   "gaps": len(values["gap_rel"]), "median_xheight_px": float(np.median([m.xheight for m in measures]))})
    info = {"summary": summary, "counts": counts, "lines": os.path.abspath(lines), "words": os.path.abspath(words),
            "max_lines": max_lines, "seed": seed,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "tool": f"htr-augment {__version__}"}
    if meta.get("credit"):
        info["credit"] = meta["credit"]
    stats = LineStats(quantiles, round(float(np.median([m.xheight_ratio for m in measures])), 4),
                      round(float(np.median([m.core_mid for m in measures])), 4), info)
    return stats, counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m htr_augment.line_stats", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lines", required=True, help="LMDB of real lines (htr-build-lmdb)")
    p.add_argument("--words", required=True, help="LMDB of their words (python -m recognizer.segment)")
    p.add_argument("--out", default=str(PACKAGE_STATS), help="JSON to write (default: %(default)s)")
    p.add_argument("--max-lines", type=int, default=1000, help="lines measured, drawn by --seed (0: all)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        stats, counts = measure_stats(args.lines, args.words, args.max_lines or None, args.seed)
    except (OSError, ValueError) as e:
        print(f"line_stats: error: {e}", file=sys.stderr)
        return 2
    write_atomic(args.out, stats.to_json())
    print(json.dumps({"counts": counts, "summary": stats.info["summary"], "xheight_ratio": stats.xheight_ratio,
                      "core_mid": stats.core_mid}, indent=1), file=sys.stderr)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
