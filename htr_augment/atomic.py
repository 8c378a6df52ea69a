"""Atomic file writes: build beside, then rename, so a reader never sees half a file."""
from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)
    return path


def write_table_atomic(path: str | os.PathLike, rows: Iterable[Sequence], delimiter: str = "\t") -> Path:
    """Rows (the header first) as TSV (or CSV with delimiter=",")."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter=delimiter, lineterminator="\n").writerows(rows)
    os.replace(tmp, path)
    return path
