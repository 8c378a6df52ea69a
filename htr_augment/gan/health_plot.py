"""Plot a GAN run's health metrics (metrics.csv, `health/*`) as one PNG of small panels.

    python -m htr_augment.gan.health_plot runs/gan [--out runs/gan/health.png] [--from 3500]

Panels: D's held-out AUC, D's margin, R's CER of the live and EMA generators' words (real
words for reference), their mean peak ink, z-diversity and, for generators with letter noise,
letter-noise diversity. Drawn with Pillow (no plotting library is a dependency).
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..atomic import write_atomic
from ..training.metrics_logger import CSV_NAME, read_metrics_csv

PANELS = [  # (title, [(metric, colour)])
    ("D held-out AUC", [("health/d_auc", (200, 30, 30))]),
    ("D margin (real - fake score)", [("health/d_margin", (200, 30, 30))]),
    ("R CER: live G, EMA G, EMA G in real styles, real",
     [("health/live_r_cer", (30, 90, 200)), ("health/ema_r_cer", (30, 160, 60)),
      ("health/ema_styled_r_cer", (230, 140, 0)), ("health/real_r_cer", (120, 120, 120))]),
    ("mean peak ink: live G, EMA G, real", [("health/live_peak_ink", (30, 90, 200)),
                                            ("health/ema_peak_ink", (30, 160, 60)),
                                            ("health/real_peak_ink", (120, 120, 120))]),
    ("z-diversity: live G, EMA G", [("health/live_z_diversity", (30, 90, 200)),
                                    ("health/ema_z_diversity", (30, 160, 60))]),
    ("letter-noise diversity: live G, EMA G", [("health/live_noise_diversity", (30, 90, 200)),
                                               ("health/ema_noise_diversity", (30, 160, 60))]),
]
OPTIONAL = {"letter-noise diversity: live G, EMA G"}  # drawn only for runs that log it (generator.char_noise)
W, H, PAD = 420, 200, 36


def _panel(title: str, series: list[tuple[list[tuple[int, float]], tuple[int, int, int]]]) -> Image.Image:
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    draw.text((PAD, 4), title, fill="black", font=font)
    points = [p for s, _ in series for p in s if np.isfinite(p[1])]
    if not points:
        draw.text((PAD, H // 2), "no data", fill="gray", font=font)
        return img
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    box = (PAD, 20, W - 10, H - 24)
    draw.rectangle(box, outline=(180, 180, 180))

    def at(x: float, y: float) -> tuple[float, float]:
        return (box[0] + (x - x0) / (x1 - x0) * (box[2] - box[0]), box[3] - (y - y0) / (y1 - y0) * (box[3] - box[1]))

    for s, colour in series:
        pts = [at(x, y) for x, y in s if np.isfinite(y)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        elif pts:
            draw.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=colour)
    draw.text((2, box[1]), f"{y1:.3g}", fill="black", font=font)
    draw.text((2, box[3] - 10), f"{y0:.3g}", fill="black", font=font)
    draw.text((box[0], box[3] + 4), f"{x0}", fill="black", font=font)
    draw.text((box[2] - 40, box[3] + 4), f"{x1}", fill="black", font=font)
    return img


def plot_health(run_dir: str | Path, out: str | Path | None = None, start: int = 0) -> Path:
    run_dir = Path(run_dir)
    csv = run_dir / CSV_NAME
    if not csv.is_file():
        raise FileNotFoundError(f"{csv}: no metrics.csv in this run directory")
    metrics = {k: [(s, v) for s, v in pts if s >= start] for k, pts in read_metrics_csv(csv).items()}
    if not any(k.startswith("health/") for k in metrics):
        raise ValueError(f"{csv}: no health/* metrics (train with --val and train.eval_every > 0)")
    panels = [_panel(title, [(metrics.get(name, []), colour) for name, colour in series]) for title, series in PANELS
              if title not in OPTIONAL or any(name in metrics for name, _ in series)]
    cols = 2
    rows = -(-len(panels) // cols)
    sheet = Image.new("RGB", (cols * W, rows * H), "white")
    for i, p in enumerate(panels):
        sheet.paste(p, ((i % cols) * W, (i // cols) * H))
    out = Path(out) if out else run_dir / "health.png"
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")  # colour: the live / EMA / real lines
    return write_atomic(out, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m htr_augment.gan.health_plot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="GAN run directory (holds metrics.csv)")
    p.add_argument("--out", help="PNG to write (default RUN/health.png)")
    p.add_argument("--from", dest="start", type=int, default=0, metavar="STEP",
                   help="plot from this iteration on (e.g. after R's pre-training)")
    args = p.parse_args(argv)
    try:
        print(plot_health(args.run, args.out, args.start))
    except (OSError, ValueError) as e:
        print(f"htr_augment.gan.health_plot: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
