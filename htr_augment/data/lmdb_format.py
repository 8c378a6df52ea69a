"""The LMDB layout shared by every dataset this project writes or reads.

Compatible with the de-facto standard of the text-recognition benchmark repos:
``num-samples`` (ASCII integer) and, for i = 1..num-samples, ``image-%09d``
(encoded image bytes) and ``label-%09d`` (UTF-8). Readers of that standard read
ours unchanged. Extra keys carry what the standard lacks: ``writer-%09d``
(writer / document id), ``source-%09d`` (where the sample came from) and
``meta`` (JSON: alphabet, counts, source, build options, image height).

Writes are atomic: samples go into ``OUT.partial`` and the directory is renamed
to ``OUT`` only once ``num-samples`` and ``meta`` are in. An interrupted build
leaves only the ``.partial`` directory, whose ``build-state`` key (committed in
the same transaction as the samples) lets it resume without loss or duplicates.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lmdb

from ..atomic import check_build_target, install_built

NUM_SAMPLES = b"num-samples"
META = b"meta"
BUILD_STATE = b"build-state"  # only inside a .partial directory
FORMAT_NAME = "htr-augment-lmdb"
FORMAT_VERSION = 1

_INITIAL_MAP_SIZE = 64 << 20  # grown by doubling on demand, never preallocated


def image_key(i: int) -> bytes:
    return b"image-%09d" % i


def label_key(i: int) -> bytes:
    return b"label-%09d" % i


def writer_key(i: int) -> bytes:
    return b"writer-%09d" % i


def source_key(i: int) -> bytes:
    return b"source-%09d" % i


def partial_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


def open_readonly(path: str | os.PathLike) -> lmdb.Environment:
    """Open an LMDB for reading: no lock file, safe from many processes at once."""
    path = Path(path)
    if not (path / "data.mdb").is_file():
        if partial_path(path).is_dir():
            raise FileNotFoundError(f"{path}: not finished; an interrupted build is at {partial_path(path)} (rerun with --resume)")
        raise FileNotFoundError(f"{path}: no LMDB here (expected {path / 'data.mdb'})")
    return lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False, max_readers=256)


_SHARED: dict[tuple[str, int], lmdb.Environment] = {}


def open_shared(path: str | os.PathLike) -> lmdb.Environment:
    """One read-only environment per LMDB and process.

    LMDB refuses to open the same environment twice in a process, and a handle
    must not be used across a fork, so datasets share this per-process cache. A
    forked worker closes the handle it inherited (harmless: opened without a lock
    table) before opening its own."""
    real = os.path.realpath(path)
    key = (real, os.getpid())
    env = _SHARED.get(key)
    if env is None:
        for stale in [k for k in _SHARED if k[0] == real]:
            _SHARED.pop(stale).close()
        env = _SHARED[key] = open_readonly(path)
    return env


def read_num_samples(txn: lmdb.Transaction, path: Any = "") -> int:
    raw = txn.get(NUM_SAMPLES)
    if raw is None:
        raise ValueError(f"{path}: LMDB has no 'num-samples' key")
    try:
        return int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{path}: 'num-samples' is not an ASCII integer: {raw[:40]!r}") from None


def read_meta(txn: lmdb.Transaction) -> dict:
    raw = txn.get(META)
    return json.loads(raw.decode("utf-8")) if raw else {}


class LmdbWriter:
    """Appends samples to ``OUT.partial`` and publishes ``OUT`` atomically on `finish`.

    `fingerprint` describes the inputs and options; resuming a partial build made
    with a different fingerprint is refused, since its sample indices would not
    line up with the inputs any more.
    """

    def __init__(self, out: str | os.PathLike, fingerprint: dict, *, resume: bool = False,
                 overwrite: bool = False, commit_every: int = 512):
        self.out = Path(out)
        self.partial = partial_path(self.out)
        self.commit_every = commit_every
        check_build_target(self.out, self.partial, resume=resume, overwrite=overwrite)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(self.partial), map_size=_INITIAL_MAP_SIZE, subdir=True, lock=True)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # normalise tuples etc.
        with self.env.begin() as txn:
            raw = txn.get(BUILD_STATE)
        if raw is not None:
            saved = json.loads(raw.decode("utf-8"))
            if saved.get("fingerprint") != self.fingerprint:
                self.env.close()
                raise ValueError(
                    f"{self.partial} was started with other inputs or options; cannot resume it "
                    f"(pass --overwrite to start over).\n  then: {saved.get('fingerprint')}\n  now:  {self.fingerprint}")
            self.count = saved["count"]
            self.state = saved["state"]
        else:
            self.count = 0
            self.state = {}
        self.resumed_from = self.count
        self._pending: list[tuple[bytes, bytes]] = []

    def add(self, image: bytes, label: str, writer: str = "", source: str = "") -> int:
        """Queue one sample; returns its 1-based index. Call `commit` to make it durable."""
        self.count += 1
        i = self.count
        self._pending += [(image_key(i), image), (label_key(i), label.encode("utf-8")),
                          (writer_key(i), writer.encode("utf-8")), (source_key(i), source.encode("utf-8"))]
        return i

    def pending(self) -> int:
        return len(self._pending) // 4

    def commit(self, state: dict | None = None) -> None:
        """Write the queued samples together with the caller's resume state, in one transaction."""
        if state is not None:
            self.state = state
        record = json.dumps({"fingerprint": self.fingerprint, "count": self.count, "state": self.state},
                            ensure_ascii=False).encode("utf-8")
        self._put_all(self._pending + [(BUILD_STATE, record)])
        self._pending = []

    def _put_all(self, items: list[tuple[bytes, bytes]]) -> None:
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for k, v in items:
                        txn.put(k, v)
                return
            except lmdb.MapFullError:
                # The aborted transaction left nothing behind; grow and redo it.
                self.env.set_mapsize(self.env.info()["map_size"] * 2)

    def labels(self):
        """Iterate (label, writer) of everything committed so far."""
        with self.env.begin() as txn:
            for i in range(1, self.count + 1):
                yield txn.get(label_key(i)).decode("utf-8"), txn.get(writer_key(i)).decode("utf-8")

    def finish(self, meta: dict) -> Path:
        """Write ``num-samples`` and ``meta``, drop the build state, rename to OUT."""
        if self._pending:
            self.commit()
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "num_samples": self.count, **meta}
        self._put_all([(NUM_SAMPLES, str(self.count).encode("ascii")),
                       (META, json.dumps(meta, ensure_ascii=False).encode("utf-8"))])
        with self.env.begin(write=True) as txn:
            txn.delete(BUILD_STATE)
        self.env.sync(True)
        self.env.close()
        (self.partial / "lock.mdb").unlink(missing_ok=True)
        return install_built(self.partial, self.out)  # an existing OUT only with overwrite

    def close(self) -> None:
        """Leave the partial build as it is (for a later resume)."""
        self.env.close()
