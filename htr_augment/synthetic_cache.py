"""Synthetic words written once into an LMDB and read back like real data.

    cache = cached_words(lambda: FontWordDataset(words, length=20_000, height=32), key, "cache/", prefix="fonts")
    synth = LmdbWordDataset(cache.path, height=32)      # item i = the dataset's item i, every epoch and run

A dataset that renders or generates words (SyntheticWordDataset, FontWordDataset) or
lines (SyntheticLineDataset, FontLineDataset) costs
its generation in every epoch of every run that reads it; a cache pays it once. The
cache is named by a hash of `key` (what its words depend on: source, generator hash,
lexicon hash, count, seed, height), so a changed key gets its own cache, and a finished
one is reused as it is. It is built in ``NAME.lmdb.partial`` and renamed when complete
(htr_augment.data.lmdb_format.LmdbWriter); an interrupted build resumes where it stopped.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from . import __version__
from .alphabet import Alphabet
from .data.lmdb_format import LmdbWriter, open_shared, partial_path, read_meta
from .images import encode_png, to_uint8

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
COMMIT_EVERY = 512  # words per LMDB transaction (and the granularity of a resume)


@dataclass
class WordCache:
    path: Path
    key: dict       # what the words depend on (stored in the LMDB meta)
    digest: str     # SHA-256 of the canonical key; the cache's name holds its first 16 hex digits
    words: int
    build_s: float  # seconds its build took, whenever it was built (every session of a resumed build)
    reused: bool    # found finished: this call built nothing


def key_digest(key: dict) -> str:
    """SHA-256 of the key as canonical JSON (sorted keys): the same settings give the same name."""
    text = json.dumps({"cache_format": CACHE_FORMAT, **key}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_path(cache_dir: str | os.PathLike, prefix: str, key: dict) -> Path:
    return Path(cache_dir) / f"{prefix}-{key_digest(key)[:16]}.lmdb"


def _canonical(key: dict) -> dict:
    return json.loads(json.dumps(key))


def _finished(path: Path, key: dict) -> WordCache:
    with open_shared(path).begin() as txn:
        meta = read_meta(txn)
    if meta.get("cache_key") != _canonical(key):
        raise ValueError(f"{path}: a word cache built for other settings ({meta.get('cache_key')}), "
                         f"not {_canonical(key)}; remove it")
    return WordCache(path, key, key_digest(key), int(meta["num_samples"]), float(meta.get("build_s", 0.0)), True)


def _as_list(samples):
    return samples


def cached_words(make: Callable[[], Dataset], key: dict, cache_dir: str | os.PathLike, *, prefix: str,
                 description: str = "", credit: str = "", num_workers: int = 0, progress: bool = True,
                 unit: str = "words") -> WordCache:
    """The cache of `key`: reused when finished, else built from `make()` (called only then),
    whose every item (WordSample: a word, or a whole line) becomes one LMDB sample, in index
    order; `unit` ("words", "lines") names the items in the log and the progress bar."""
    path = cache_path(cache_dir, prefix, key)
    if (path / "data.mdb").is_file():
        cache = _finished(path, key)
        log.info("%s: %d cached %s, reused (built in %.1f s)", path, cache.words, unit, cache.build_s)
        return cache
    dataset = make()
    writer = LmdbWriter(path, _canonical(key), resume=partial_path(path).is_dir())
    start, spent = writer.state.get("next", 0), writer.state.get("build_s", 0.0)
    t0 = time.perf_counter()
    try:
        _write(writer, dataset, start, spent, t0, num_workers, progress, prefix, unit)
    except BaseException:
        writer.close()  # everything up to the last commit stays; the next call resumes
        raise
    build_s = spent + time.perf_counter() - t0
    written = list(writer.labels())
    writer.finish({
        "alphabet": Alphabet.from_labels(label for label, _ in written).chars, "image_height": key.get("height"),
        "counts": {"written": writer.count, "rejected": 0, "writers": len({w for _, w in written})},
        "source": [description or prefix], "options": _canonical(key), "cache_key": _canonical(key),
        "build_s": build_s, "credit": credit, "tool": f"htr-augment {__version__}",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })
    log.info("%s: %d %s cached in %.1f s", path, writer.count, unit, build_s)
    return WordCache(path, key, key_digest(key), writer.count, build_s, False)


def _write(writer: LmdbWriter, dataset: Dataset, start: int, spent: float, t0: float, num_workers: int,
           progress: bool, prefix: str, unit: str) -> None:
    n = len(dataset)
    batch = min(32, COMMIT_EVERY)  # SyntheticWordDataset's chunk: one generator pass per batch
    loader = DataLoader(Subset(dataset, range(start, n)), batch_size=batch, num_workers=num_workers,
                        collate_fn=_as_list)
    i = start
    with tqdm(total=n, initial=start, unit=unit.rstrip("s"), desc=f"caching {prefix} {unit}",
              disable=not progress) as bar:
        for batch in loader:
            for s in batch:
                writer.add(encode_png(to_uint8(s.image)), s.text, s.writer, f"{prefix}:{i}")
                i += 1
                if i % COMMIT_EVERY == 0:
                    writer.commit({"next": i, "build_s": spent + time.perf_counter() - t0})
            bar.update(len(batch))
    writer.commit({"next": i, "build_s": spent + time.perf_counter() - t0})
