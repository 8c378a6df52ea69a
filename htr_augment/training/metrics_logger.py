"""Scalars to TensorBoard and to metrics.csv (the same values), text and images to TensorBoard.

Only the main process writes; on the others every method is a no-op, so callers
log unconditionally. On resume from step s, events and CSV rows after s (written
by the interrupted run after its last checkpoint) are dropped, so that the logs
read as one uninterrupted run.
"""
from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path

import torch

from ..atomic import write_table_atomic

CSV_NAME = "metrics.csv"
CSV_FIELDS = ["step", "name", "value", "time"]


class MetricsLogger:
    def __init__(self, out_dir: str | os.PathLike, enabled: bool = True, resume_step: int | None = None):
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self._tb = None
        self._csv = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter  # imported late: slow, main process only

        self.out_dir.mkdir(parents=True, exist_ok=True)
        purge = resume_step + 1 if resume_step is not None else None
        self._tb = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=purge)
        path = self.out_dir / CSV_NAME
        if resume_step is not None and path.is_file():
            _truncate_csv(path, resume_step)
        new = not path.is_file() or path.stat().st_size == 0
        self._csv_file = open(path, "a", encoding="utf-8", newline="")
        self._csv = csv.writer(self._csv_file)
        if new:
            self._csv.writerow(CSV_FIELDS)

    def scalar(self, name: str, value: float, step: int) -> None:
        if not self.enabled:
            return
        value = float(value)
        self._tb.add_scalar(name, value, step)
        self._csv.writerow([step, name, repr(value) if math.isfinite(value) else str(value), f"{time.time():.3f}"])

    def scalars(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.scalar(name, value, step)

    def text(self, name: str, text: str, step: int) -> None:
        if self.enabled:
            self._tb.add_text(name, text, step)

    def image(self, name: str, image: torch.Tensor, step: int) -> None:
        """`image`: (1, H, W) in the project's normalisation (ink = 1); shown as dark ink on white."""
        if self.enabled:
            self._tb.add_image(name, (1.0 - image.detach().float().cpu().clamp(0, 1)), step)

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._csv_file.flush()

    def close(self) -> None:
        if self.enabled and self._tb is not None:
            self._tb.close()
            self._csv_file.close()
            self._tb = None
            self.enabled = False

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics_csv(path: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """metrics.csv -> {name: [(step, value), ...]} in file order."""
    out: dict[str, list[tuple[int, float]]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["name"], []).append((int(row["step"]), float(row["value"])))
    return out


def _truncate_csv(path: Path, last_step: int) -> None:
    with open(path, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f)]
    if not rows:
        return
    header, body = rows[0], rows[1:]
    keep = [r for r in body if r and int(r[0]) <= last_step]
    if len(keep) == len(body):
        return
    write_table_atomic(path, [header] + keep, delimiter=",")
