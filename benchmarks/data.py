"""The benchmark's data: train/val/test LMDBs from a prepared folder or a TSV dataset (built once),
the low-resource writers, the unseen-test-writers check, and lines cut into words once by a
line recognizer."""
from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from htr_augment.data import LmdbWordDataset
from htr_augment.data.build_lmdb import BuildOptions, build
from htr_augment.data.lmdb_format import label_key, open_shared, partial_path, read_meta, read_num_samples
from htr_augment.data.sources import read_tsv
from htr_augment.training.checkpoint import file_sha256
from recognizer.model import load_recognizer

from .common import BenchmarkError, sha256_text, write_json

log = logging.getLogger("benchmarks.data")

# -- data -------------------------------------------------------------------------------

@dataclass
class Splits:
    origin: str
    train: Path
    val: Path | None
    test: Path


def _is_lmdb(path: Path) -> bool:
    return (path / "data.mdb").is_file()


def _meta(path: Path) -> dict:
    with open_shared(path).begin() as txn:
        return read_meta(txn)


def resolve_data(data: str | os.PathLike, cache: Path, progress: bool = True) -> Splits:
    """train/val/test LMDBs: those of a folder of prepared LMDBs, or built (once, into
    `cache`) from a TSV dataset with a split column, such as ../shared/data/copiste."""
    data = Path(data)
    if not data.exists():
        raise BenchmarkError(f"{data}: no such dataset (--data: a folder of train.lmdb, val.lmdb, test.lmdb, "
                             "or a TSV dataset such as ../shared/data/copiste)")
    if data.is_dir() and _is_lmdb(data / "train.lmdb"):
        if not _is_lmdb(data / "test.lmdb"):
            raise BenchmarkError(f"{data}: has train.lmdb but no test.lmdb (val.lmdb is optional)")
        val = data / "val.lmdb"
        return Splits(str(data), data / "train.lmdb", val if _is_lmdb(val) else None, data / "test.lmdb")
    tsv = _find_tsv(data)
    built = {split: _build_split(tsv, split, cache, progress) for split in ("train", "val", "test")}
    for split in ("train", "test"):
        if built[split] is None:
            raise BenchmarkError(f"{tsv}: no row with split '{split}' (the benchmark needs train and test)")
    return Splits(str(tsv), built["train"], built["val"], built["test"])


def _find_tsv(data: Path) -> Path:
    if data.is_file():
        if data.suffix.lower() != ".tsv":
            raise BenchmarkError(f"{data}: --data takes a folder or a .tsv file")
        return data
    tsvs = sorted(data.glob("*.tsv"))
    if len(tsvs) > 1 and data / "lines.tsv" in tsvs:
        return data / "lines.tsv"
    if len(tsvs) != 1:
        found = ", ".join(p.name for p in tsvs) or "none"
        raise BenchmarkError(f"{data}: expected train.lmdb + test.lmdb (+ val.lmdb), or one TSV with columns "
                             f"'file text document split' (TSV files found: {found}); pass the TSV itself")
    return tsvs[0]


def _build_split(tsv: Path, split: str, cache: Path, progress: bool) -> Path | None:
    out = cache / f"{split}.lmdb"
    inputs = [f"tsv:{tsv.resolve()}[split={split}]"]
    if _is_lmdb(out):
        if _meta(out).get("source") != inputs:
            raise BenchmarkError(f"{out} was built from {_meta(out).get('source')}, not {inputs[0]}: "
                                 "remove it or choose another --out")
        return out
    items = list(read_tsv(tsv, split))
    if not items:
        return None
    report = build(items, out, BuildOptions(), inputs=inputs, resume=partial_path(out).is_dir(), progress=progress)
    log.info("%s", report.summary())
    if report.written == 0:
        raise BenchmarkError(f"{tsv}: no usable sample in split '{split}' (see {report.rejects_path})")
    return out


def lmdb_identity(path: Path | None) -> dict | None:
    """What a run's results depend on in an LMDB, by content, not by place: its folder name and
    creation time (a rebuilt LMDB has another), so a moved data or benchmark folder keeps its runs."""
    if path is None:
        return None
    return {"name": path.name, "created": _meta(path).get("created")}


def legacy_lmdb_identity(path: Path | None) -> dict | None:
    """lmdb_identity as it was until 2026-11-26 (the absolute path): to find what was keyed by it."""
    if path is None:
        return None
    return {"path": str(path.resolve()), "created": _meta(path).get("created")}


def from_legacy_identity(identity):
    """A legacy_lmdb_identity as lmdb_identity would write it (anything else unchanged)."""
    if isinstance(identity, dict) and set(identity) == {"path", "created"}:
        return {"name": Path(identity["path"]).name, "created": identity["created"]}
    return identity


def select_writers(writers: list[str], k: int, seed: int) -> list[str]:
    """K of the distinct writer ids, drawn with `seed` (the same for every run), sorted."""
    pool = sorted(set(writers) - {""})
    if not pool:
        raise BenchmarkError("the training data has no writer ids: the low-resource regime needs them "
                             "(use --regime full)")
    if k > len(pool):
        raise BenchmarkError(f"--writers {k}: the training data has only {len(pool)} writers")
    return sorted(random.Random(f"writers:{seed}").sample(pool, k))


def check_unseen(test: LmdbWordDataset, others: list[LmdbWordDataset | None]) -> None:
    """The claim of the benchmark: the test writers were not trained or selected on."""
    test_writers = set(test.writers) - {""}
    for ds in others:
        shared = sorted(test_writers & set(ds.writers)) if ds is not None else []
        if shared:
            raise BenchmarkError(f"{test.path} and {ds.path} share {len(shared)} writer(s) ({', '.join(shared[:5])}"
                                 f"{', ...' if len(shared) > 5 else ''}): the test writers must be unseen")


# -- words: lines cut by the shipped line recognizer --------------------------------------------

def is_word_lmdb(path: Path, probe: int = 500) -> bool:
    """Words (recognizer.segment's output, or no label with a space among the first `probe`), not lines."""
    if "segmentation" in _meta(path):
        return True
    with open_shared(path).begin() as txn:
        n = min(probe, read_num_samples(txn, path))
        return not any(" " in txn.get(label_key(i)).decode("utf-8") for i in range(1, n + 1))


def word_splits(splits: Splits, segmenter: str, cache: Path, device: torch.device, min_score: float = -1.0,
                progress: bool = True) -> tuple[Splits, dict]:
    """The splits as words: word LMDBs as they are; line LMDBs cut by `segmenter` (a shipped name
    or a checkpoint) once into cache/words-HASH/, named by the segmenter's SHA-256, the line
    LMDBs and the segmentation options, and reused by every later run with the same inputs."""
    from recognizer.pretrained import resolve
    from recognizer.segment import SegmentOptions, segment_lines

    lines = {k: p for k, p in (("train", splits.train), ("val", splits.val), ("test", splits.test)) if p}
    if all(is_word_lmdb(p) for p in lines.values()):
        return splits, {"segmented": False, "note": "word LMDBs given: used as they are"}
    weights = resolve(segmenter)  # PretrainedError naming the missing file and the command that makes it
    opts = SegmentOptions(min_score=float(min_score))
    key = {"segmenter_sha256": file_sha256(weights), "options": opts.fingerprint(),
           "lines": {k: lmdb_identity(p) for k, p in lines.items()}}
    folder = cache / f"words-{sha256_text(json.dumps(key, sort_keys=True))[:16]}"
    legacy = {**key, "lines": {k: legacy_lmdb_identity(p) for k, p in lines.items()}}
    legacy_folder = cache / f"words-{sha256_text(json.dumps(legacy, sort_keys=True))[:16]}"
    if not folder.exists() and (legacy_folder / "segmentation.json").is_file():
        # A cut keyed by the line LMDBs' paths (before 2026-11-26): the same words. Used where it is,
        # so commands that name its folder (--data OUT/data/words-HASH) keep working.
        folder = legacy_folder
    info_path = folder / "segmentation.json"
    if info_path.is_file() and all(_is_lmdb(folder / f"{k}.lmdb") for k in lines):
        info = {**json.loads(info_path.read_text(encoding="utf-8")), "reused": True}
        log.info("words cut by %s before, reused: %s", segmenter, folder)
    else:
        model, alphabet, config = load_recognizer(weights, device)
        info = {"segmented": True, "segmenter": segmenter, "segmenter_file": str(weights), "key": key,
                "dir": str(folder), "splits": {}, "reused": False}
        for split, path in lines.items():
            out, t0 = folder / f"{split}.lmdb", time.perf_counter()
            if not _is_lmdb(out):  # an earlier, interrupted pass may have finished some splits
                report = segment_lines(model, alphabet, path, out, opts, height=config["data"]["height"],
                                       device=device, checkpoint=f"{segmenter} (SHA-256 {key['segmenter_sha256']})",
                                       resume=partial_path(out).is_dir(), progress=progress)
                if report.words == 0:
                    raise BenchmarkError(f"{path}: the segmenter {segmenter} cut no word from its lines "
                                         f"(rejects: {report.rejects_path})")
            counts = _meta(out)["counts"]
            info["splits"][split] = {"lines": counts["lines"], "lines_kept": counts["lines_kept"],
                                     "words": counts["words"], "seconds": time.perf_counter() - t0}
        info["seconds"] = sum(v["seconds"] for v in info["splits"].values())
        write_json(info_path, info)  # last: its presence marks the cut complete
    got = {k: folder / f"{k}.lmdb" for k in lines}
    return Splits(f"{splits.origin}, cut into words by {segmenter}", got["train"], got.get("val"), got["test"]), info
