"""What every benchmark module shares: its error type, atomic JSON and text hashes."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from htr_augment.atomic import write_atomic


class BenchmarkError(ValueError):
    """A setting or input that makes the benchmark impossible; the message says which."""


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
