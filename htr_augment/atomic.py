"""Atomic file writes: build beside, then rename, so a reader never sees half a file."""
from __future__ import annotations

import csv
import os
import shutil
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


def install_built(partial: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Rename a completely built `partial` (file or folder) to `out`. An existing `out` (an
    overwrite) is renamed aside first and deleted only once the new one is in place."""
    partial, out = Path(partial), Path(out)
    old = None
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.rename(out, old)
    os.rename(partial, out)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    return out


def check_build_target(out: Path, partial: Path, *, resume: bool, overwrite: bool, what: str = "build") -> None:
    """Before building `partial` to install as `out`: refuse to replace `out` without `overwrite`,
    and an interrupted `partial` without `resume` (continue it) or `overwrite` (start over)."""
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    if partial.exists():
        if overwrite and not resume:
            shutil.rmtree(partial)
        elif not resume:
            raise FileExistsError(f"{partial} holds an interrupted {what}: pass --resume to continue it "
                                  "or --overwrite to start over")
