"""Does mixing synthetic words into every batch make the recognizer better on unseen writers?

    python -m benchmarks.run --synthetic-ratio 0.5 --generator runs/gan/last.pt          # CPU defaults
    python -m benchmarks.run --config configs/benchmark/gpu.toml --generator G.pt         # the full study
    python -m benchmarks.run --synthetic-source fonts --data words/                       # fonts, word LMDBs

For each regime (low-resource: K training writers chosen by a seed; full: every training
writer) and seed, the recognizer is trained twice with recognizer.train.train: on the real
training data alone (the baseline, ratio 0) and with synthetic words (the GAN's through
SyntheticWordDataset, or handwriting fonts' through FontWordDataset) at a fixed fraction of
every batch. Both arms share the recognizer config, the number of steps, the seed, the real
data and its order (MixingBatchSampler seeds the real permutation the same way). Both are
evaluated with recognizer.evaluate on the test writers, checked to share no writer id with the
training and validation data (the GAN must not have been trained on them either). The
report compares them: mean ± std over seeds, the relative change, and a paired
bootstrap 95% interval of the difference (test samples resampled, the same resample for both
arms, the difference averaged over seeds).

Each run lives in OUT/runs/REGIME/ARM/seedN: a finished run (result.json) is skipped on rerun,
an interrupted one resumes from its last.pt. The baseline does not depend on the synthetic
source, so a later --synthetic-source fonts in the same OUT reuses it.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import logging
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from htr_augment.alphabet import Alphabet
from htr_augment.atomic import write_atomic
from htr_augment.config import load_config, merge
from htr_augment.data import LmdbWordDataset
from htr_augment.data.build_lmdb import BuildOptions, build
from htr_augment.data.credit import data_credit
from htr_augment.data.lmdb_format import open_shared, partial_path, read_meta
from htr_augment.data.sources import read_tsv
from htr_augment.lexicon import load_lexicon
from htr_augment.mixing import MixedDataset, MixingBatchSampler
from htr_augment.training import select_device
from htr_augment.training.checkpoint import file_sha256
from recognizer.config import load_recognizer_config, make_config
from recognizer.evaluate import bootstrap_ci, evaluate
from recognizer.model import load_recognizer
from recognizer.report import write_report
from recognizer.train import RUNTIME_KEYS, load_datasets, train

log = logging.getLogger("benchmarks.run")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "benchmark" / "cpu.toml"
DEFAULT_DATA = Path(os.environ.get("HTR_COPISTE", REPO.parent / "shared" / "data" / "copiste"))
SOURCES = ("gan", "fonts", "none")
REGIMES = ("low", "full", "both")
RECOGNIZER_TABLES = ("data", "model", "train", "augment")  # benchmark TOML tables merged over the recognizer's

# Top-level keys of a benchmark TOML (configs/benchmark/*.toml); the command line overrides them.
DEFAULTS: dict[str, Any] = {
    "recognizer": "../recognizer/tiny.toml",  # recognizer config, relative to the benchmark TOML
    "steps": 600,               # optimizer steps per run, the same for every arm
    "seeds": 1,                 # runs per arm: train.seed, train.seed + 1, ...
    "regime": "both",           # low | full | both
    "writers": 10,              # training writers kept in the low-resource regime ...
    "writer_seed": 0,           # ... drawn with this seed (the same writers for every seed and arm)
    "synthetic_ratio": 0.5,     # fraction of each batch that is synthetic in the synthetic arm
    "synthetic_source": "gan",  # gan | fonts | none (baseline only)
    "synthetic_length": 0,      # distinct synthetic words; 0: 10 x the real training set
    "evaluate": "best",         # checkpoint tested: best (lowest validation CER) or last
    "eval_batch_size": 32,
    "bootstrap": 1000,          # resamples of the paired bootstrap
    "device": "auto",
}


class BenchmarkError(ValueError):
    """A setting or input that makes the benchmark impossible; the message says which."""


# -- settings -------------------------------------------------------------------------------

def load_settings(path: str | os.PathLike) -> tuple[dict, dict]:
    """(benchmark settings, recognizer config) of a benchmark TOML: its [data]/[model]/[train]/
    [augment] tables are merged over the recognizer config it names."""
    path = Path(path)
    raw = load_config(path)
    tables = {k: raw.pop(k) for k in RECOGNIZER_TABLES if k in raw}
    settings = merge(DEFAULTS, raw, str(path))
    rec_path = (path.parent / settings["recognizer"]).resolve()
    config = make_config(merge(load_recognizer_config(rec_path), tables, str(path)), str(path))
    settings["recognizer"] = str(rec_path)
    return settings, config


def check_settings(s: dict, config: dict) -> None:
    if s["synthetic_source"] not in SOURCES:
        raise BenchmarkError(f"--synthetic-source must be one of {', '.join(SOURCES)}, got {s['synthetic_source']!r}")
    if s["regime"] not in REGIMES:
        raise BenchmarkError(f"--regime must be one of {', '.join(REGIMES)}, got {s['regime']!r}")
    if s["evaluate"] not in ("best", "last"):
        raise BenchmarkError(f"evaluate must be 'best' or 'last', got {s['evaluate']!r}")
    for key in ("steps", "seeds", "writers", "eval_batch_size", "bootstrap"):
        if int(s[key]) < 1:
            raise BenchmarkError(f"--{key.replace('_', '-')} must be at least 1, got {s[key]}")
    if s["synthetic_source"] == "none":
        return
    ratio, batch = float(s["synthetic_ratio"]), config["train"]["batch_size"]
    if not 0 < ratio < 1:
        raise BenchmarkError(f"--synthetic-ratio is the synthetic fraction of each batch, in (0, 1); got {ratio} "
                             "(the baseline arm is ratio 0; --synthetic-source none runs it alone)")
    if not 1 <= round(ratio * batch) < batch:
        raise BenchmarkError(f"--synthetic-ratio {ratio} x batch size {batch} leaves "
                             f"{round(ratio * batch)} synthetic samples per batch; need between 1 and {batch - 1}")


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
    """What a run's results depend on in an LMDB: a rebuilt LMDB has another creation time."""
    if path is None:
        return None
    return {"path": str(path.resolve()), "created": _meta(path).get("created")}


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


# -- synthetic source -----------------------------------------------------------------------

@dataclass
class Source:
    """Where the synthetic arm's words come from."""
    kind: str  # gan | fonts
    ratio: float
    generator: Path | None = None
    sha256: str | None = None
    fonts: list[str] | None = None
    lexicon: str | None = None  # --lexicon, else the words of the regime's training labels
    alphabet: Alphabet | None = None  # the generator's: words it cannot write are left out

    @property
    def arm(self) -> str:
        tag = f"gan-{self.sha256[:12]}" if self.kind == "gan" else self.kind
        return f"{tag}-r{self.ratio:g}"

    @property
    def label(self) -> str:
        what = "GAN" if self.kind == "gan" else "fonts"
        return f"real + {what} ({self.ratio:.0%} of each batch)"

    def describe(self) -> dict:
        return {"source": self.kind, "ratio": self.ratio, "generator": str(self.generator) if self.generator else None,
                "generator_sha256": self.sha256, "fonts": self.fonts,
                "lexicon": self.lexicon or "words of the regime's training labels"}

    def dataset(self, words: list[str], length: int, seed: int, height: int, device: str) -> Dataset:
        if self.kind == "gan":
            from htr_augment.synthetic import SyntheticWordDataset
            # A path, not the loaded generator: DataLoader workers reload it instead of unpickling weights.
            return SyntheticWordDataset(str(self.generator), words, length=length, seed=seed, height=height,
                                        device=device)
        from htr_augment.fonts import FontWordDataset
        return FontWordDataset(words, length=length, seed=seed, height=height)


def make_source(kind: str, ratio: float, generator: str | None, lexicon: str | None,
                alternatives: str = ", or use --synthetic-source fonts or none") -> Source | None:
    """The synthetic source, checked before any training starts (weights exist and load, fonts are installed)."""
    if kind == "none":
        return None
    if kind == "fonts":
        from htr_augment.fonts import find_fonts
        fonts = find_fonts()
        if not fonts:
            raise BenchmarkError("--synthetic-source fonts: no handwriting font installed "
                                 "(pip install fontpkg-caveat fontpkg-kalam fontpkg-indie-flower)")
        return Source("fonts", ratio, fonts=[p.name for p in fonts], lexicon=lexicon)
    from htr_augment.gan import word_generator
    path = Path(generator) if generator else word_generator.PACKAGE_WEIGHTS
    if not path.is_file():
        if generator:
            raise BenchmarkError(f"{path}: no generator checkpoint there (--generator)")
        raise BenchmarkError(f"no generator weights are shipped in the package yet ({path}): pass --generator CKPT "
                             f"(trained with python -m htr_augment.gan.train){alternatives}")
    gen = word_generator.WordGenerator.load(path)  # CheckpointError naming the file if it is not a GAN checkpoint
    return Source("gan", ratio, generator=path.resolve(), sha256=file_sha256(path), lexicon=lexicon,
                  alphabet=gen.alphabet)


def synthetic_words(source: Source, real: LmdbWordDataset, alphabet: Alphabet) -> list[str]:
    """The lexicon, restricted to words the recognizer's alphabet (it must learn them) and the
    generator's can write."""
    words = set(load_lexicon(source.lexicon) if source.lexicon else (w for t in real.texts for w in t.split()))
    writable = [alphabet] + ([source.alphabet] if source.alphabet else [])
    usable = sorted(w for w in words if not any(a.missing(w) for a in writable))
    if len(usable) < len(words):
        log.warning("synthetic lexicon: %d of %d words have characters outside the recognizer's or the generator's "
                    "alphabet; left out", len(words) - len(usable), len(words))
    if not usable:
        raise BenchmarkError(f"no word of the synthetic lexicon ({source.lexicon or 'training labels'}) can be "
                             "written with both the recognizer's and the generator's alphabets")
    return usable


# -- one run --------------------------------------------------------------------------------

def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


@dataclass
class Context:
    """What every run of one benchmark invocation shares."""
    settings: dict
    config: dict
    out: Path
    device: torch.device
    alphabet: Alphabet
    val: LmdbWordDataset | None
    test: LmdbWordDataset
    splits: Splits
    progress: bool


@dataclass
class Regime:
    name: str  # directory name
    kind: str  # low | full
    real: LmdbWordDataset
    writers: list[str] | None  # the low-resource selection


def run_one(ctx: Context, regime: Regime, source: Source | None, seed: int, words: list[str] | None) -> dict:
    """Train (or resume, or skip) and test one arm at one seed; returns its result.json record."""
    s = ctx.settings
    arm = source.arm if source else "baseline"
    run_dir = ctx.out / "runs" / regime.name / arm / f"seed{seed}"
    config = copy.deepcopy(ctx.config)
    config["train"].update(seed=seed, max_steps=int(s["steps"]))
    fingerprint = _canonical({
        "recognizer": {sec: {k: v for k, v in tab.items() if not (sec == "train" and k in RUNTIME_KEYS)}
                       for sec, tab in config.items()},
        "train_data": lmdb_identity(ctx.splits.train), "writers": regime.writers,
        "val_data": lmdb_identity(ctx.splits.val), "test_data": lmdb_identity(ctx.splits.test),
        "evaluate": s["evaluate"], "alphabet": ctx.alphabet.chars,
        # The generator by content, not by path: a moved checkpoint is still the same arm.
        "synthetic": None if source is None else {
            "source": source.kind, "ratio": source.ratio, "generator_sha256": source.sha256, "fonts": source.fonts,
            "length": int(s["synthetic_length"]), "lexicon_sha256": _sha256_text("\n".join(words))},
    })
    done = run_dir / "result.json"
    if done.is_file():
        record = json.loads(done.read_text(encoding="utf-8"))
        if record["fingerprint"] != fingerprint:
            raise BenchmarkError(f"{run_dir} holds a run with other settings (data, config or synthetic source); "
                                 "remove it or choose another --out")
        log.info("%s: finished before, skipped", run_dir)
        return {**record, "dir": str(run_dir), "skipped": True}
    started = run_dir / "run.json"
    if started.is_file() and json.loads(started.read_text(encoding="utf-8")) != fingerprint:
        raise BenchmarkError(f"{run_dir} holds an unfinished run with other settings; "
                             "remove it or choose another --out")
    _write_json(started, fingerprint)

    tc = config["train"]
    synth: Dataset = []  # the baseline: the same sampler at ratio 0, so the real order matches the other arm
    if source is not None:
        length = int(s["synthetic_length"]) or 10 * len(regime.real)
        # The generator runs in DataLoader workers when there are any (forked: CPU only).
        gen_device = "cpu" if tc["num_workers"] > 0 else str(ctx.device)
        synth = source.dataset(words, length, seed, config["data"]["height"], gen_device)
    mixed = MixedDataset(regime.real, synth)
    sampler = MixingBatchSampler(mixed, tc["batch_size"], source.ratio if source else 0.0, seed=seed)
    log.info("%s: training %s, %d steps", run_dir, source.label if source else "real only", tc["max_steps"])
    timing_path = run_dir / "timing.json"
    timing = json.loads(timing_path.read_text(encoding="utf-8")) if timing_path.is_file() \
        else {"train_s": 0.0, "sessions": 0}
    t0 = time.perf_counter()
    try:
        result = train(config, mixed, ctx.val, run_dir, alphabet=ctx.alphabet, device=ctx.device, resume=True,
                       batch_sampler=sampler, progress=ctx.progress)
    finally:  # an interrupted session's time counts too
        timing = {"train_s": timing["train_s"] + time.perf_counter() - t0, "sessions": timing["sessions"] + 1}
        _write_json(timing_path, timing)
    if result.interrupted or result.step < tc["max_steps"]:  # stopped early: checkpointed, resumed on rerun
        raise KeyboardInterrupt
    ckpt = result.best_checkpoint if s["evaluate"] == "best" and result.best_checkpoint else result.last_checkpoint
    t1 = time.perf_counter()
    model, alphabet, _ = load_recognizer(ckpt, ctx.device)
    ev = evaluate(model, alphabet, ctx.test, batch_size=int(s["eval_batch_size"]), device=ctx.device,
                  bootstrap=int(s["bootstrap"]), checkpoint=str(ckpt), progress=ctx.progress)
    write_report(ev, run_dir / "test")  # the full per-run report; test/samples.csv has every sample
    record = {
        "fingerprint": fingerprint, "regime": regime.kind, "arm": arm, "seed": seed, "dir": str(run_dir),
        "steps": result.step, "checkpoint": str(ckpt), "train_wall_s": timing["train_s"],
        "train_sessions": timing["sessions"], "eval_wall_s": time.perf_counter() - t1,
        "real_train_samples": len(regime.real), "test_samples": len(ev.samples),
        "cer": ev.cer, "wer": ev.wer,
        "references_sha256": _sha256_text("\n".join(x.reference for x in ev.samples)),
        "per_sample": {"char_errors": [x.char_errors for x in ev.samples], "chars": [x.length for x in ev.samples],
                       "word_errors": [x.word_errors for x in ev.samples], "words": [x.words for x in ev.samples]},
    }
    _write_json(done, record)  # last: its presence marks the run finished
    log.info("%s: test CER %.4f, WER %.4f", run_dir, ev.cer, ev.wer)
    return {**record, "skipped": False}


# -- aggregation ----------------------------------------------------------------------------

METRICS = (("cer", "char_errors", "chars"), ("wer", "word_errors", "words"))


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "values": values}


def summarize_arm(label: str, ratio: float, records: list[dict]) -> dict:
    return {"label": label, "ratio": ratio, "cer": _stats([r["cer"] for r in records]),
            "wer": _stats([r["wer"] for r in records]),
            "runs": [{k: r[k] for k in ("seed", "dir", "steps", "checkpoint", "train_wall_s", "eval_wall_s",
                                         "train_sessions", "cer", "wer", "skipped")} for r in records]}


def compare(baseline: list[dict], synthetic: list[dict], resamples: int, seed: int = 0) -> dict:
    """Synthetic minus baseline, seed by seed on the same test samples, averaged over seeds.

    The paired bootstrap draws test samples once per resample for both arms and every seed.
    Every run shares the test set, so the seed-averaged difference of corpus rates on a
    resample is sum(D) / sum(S * chars) with D_i = sum over seeds of (synthetic - baseline)
    errors of sample i: exactly the ratio recognizer.evaluate.bootstrap_ci resamples."""
    pairs = list(zip(sorted(baseline, key=lambda r: r["seed"]), sorted(synthetic, key=lambda r: r["seed"])))
    for b, s in pairs:
        if b["seed"] != s["seed"] or b["references_sha256"] != s["references_sha256"]:
            raise BenchmarkError(f"{b['dir']} and {s['dir']} were not tested on the same samples")
    out = {}
    for metric, errors, totals in METRICS:
        d = sum(np.asarray(s["per_sample"][errors], np.int64) - np.asarray(b["per_sample"][errors], np.int64)
                for b, s in pairs)
        n = len(pairs) * np.asarray(pairs[0][0]["per_sample"][totals], np.int64)
        base = statistics.fmean(b[metric] for b, _ in pairs)
        diff = statistics.fmean(s[metric] - b[metric] for b, s in pairs)
        lo, hi = bootstrap_ci(d, n, resamples, seed)
        out[metric] = {"baseline": base, "synthetic": statistics.fmean(s[metric] for _, s in pairs),
                       "difference": diff, "relative_change": diff / base if base else None, "ci95": [lo, hi]}
    out["bootstrap"] = {"method": "paired percentile bootstrap over test samples (same resample for both arms "
                                  "and every seed), difference averaged over seeds",
                        "level": 0.95, "resamples": resamples, "seed": seed, "seeds_paired": len(pairs)}
    return out


# -- report -----------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _pts(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f} pts"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _arm_row(arm: dict) -> str:
    cells = []
    for m in ("cer", "wer"):
        st = arm[m]
        cells.append(f"{_pct(st['mean'])} ± {100 * st['std']:.2f}" if st["std"] is not None
                     else f"{_pct(st['mean'])} (one seed)")
    wall = statistics.fmean(r["train_wall_s"] + r["eval_wall_s"] for r in arm["runs"])
    steps = ", ".join(sorted({str(r["steps"]) for r in arm["runs"]}))
    return f"| {arm['label']} | {cells[0]} | {cells[1]} | {len(arm['runs'])} | {steps} | {_minutes(wall)} |"


def markdown(rep: dict) -> str:
    p, d, syn = rep["protocol"], rep["data"], rep["synthetic"]
    lines = ["# Synthetic-data benchmark", ""]
    if syn is None:
        lines.append("Synthetic source: none (baseline arm only).")
    elif syn["source"] == "gan":
        lines.append(f"Synthetic source: GAN `{syn['generator']}` (SHA-256 `{syn['generator_sha256']}`), "
                     f"{syn['ratio']:.0%} of each batch; lexicon: {syn['lexicon']}.")
    else:
        lines.append(f"Synthetic source: handwriting fonts ({', '.join(syn['fonts'])}), {syn['ratio']:.0%} of each "
                     f"batch; lexicon: {syn['lexicon']}.")
    lines += [f"Recognizer `{p['recognizer_config']}`, {p['steps']} steps of batch {p['batch_size']} per run, "
              f"seeds {', '.join(map(str, p['seeds']))}; tested checkpoint: {p['evaluated_checkpoint']}; "
              f"device {p['device']}.",
              f"Test: {_count(d['test']['samples'], 'sample')} from {_count(d['test']['writers'], 'writer')} unseen "
              f"in training (`{d['test']['path']}`); validation: "
              + (f"{_count(d['val']['samples'], 'sample')} from {_count(d['val']['writers'], 'writer')}."
                 if d["val"] else "none."),
              f"Metrics: {p['metric']}.", ""]
    for reg in rep["regimes"].values():
        title = "Low-resource" if reg["kind"] == "low" else "Full"
        lines += [f"## {title}: {_count(reg['real_train_writers'], 'training writer')}, "
                  f"{_count(reg['real_train_samples'], 'real training sample')}", "",
                  "| arm | CER (mean ± std, pts) | WER (mean ± std, pts) | runs | steps | wall time / run |",
                  "|---|---|---|---|---|---|"]
        lines += [_arm_row(arm) for arm in reg["arms"].values()]
        cmp_ = reg.get("comparison")
        if cmp_:
            cells = []
            for m in ("cer", "wer"):
                c = cmp_[m]
                rel = "n/a" if c["relative_change"] is None else f"{100 * c['relative_change']:+.1f}%"
                cells.append(f"{_pts(c['difference'])} ({rel}), 95% CI [{_pts(c['ci95'][0])}, {_pts(c['ci95'][1])}]")
            lines.append(f"| **synthetic − baseline** | {cells[0]} | {cells[1]} | | | |")
        if reg["writer_ids"]:
            lines += ["", f"Writers kept: {', '.join(reg['writer_ids'])}."]
        if reg.get("lexicon_words"):
            lines += ["", f"Synthetic lexicon: {reg['lexicon_words']} words."]
        lines.append("")
    if any(r.get("comparison") for r in rep["regimes"].values()):
        b = next(r["comparison"]["bootstrap"] for r in rep["regimes"].values() if r.get("comparison"))
        lines += [f"Intervals: {b['method']}; {b['resamples']} resamples, seed {b['seed']}. Negative = fewer errors "
                  "with synthetic data.", ""]
    lines += [d["credit"] or f"Data: {d['origin']} (no credit recorded in its LMDB meta)", ""]
    return "\n".join(lines)


def _dataset_info(ds: LmdbWordDataset | None) -> dict | None:
    if ds is None:
        return None
    return {"path": ds.path, "samples": len(ds), "writers": len(set(ds.writers) - {""})}


# -- command line -----------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_CONFIG),
                   help="benchmark TOML: configs/benchmark/cpu.toml (default; under an hour on 2 CPU cores for "
                        "one seed) or gpu.toml (the full study). Flags below override it")
    p.add_argument("--synthetic-ratio", type=float, metavar="R", help="synthetic fraction of each batch in the "
                   "synthetic arm, in (0, 1) (config default 0.5)")
    p.add_argument("--synthetic-source", choices=SOURCES,
                   help="gan: SyntheticWordDataset; fonts: FontWordDataset (the naive baseline); none: baseline only")
    p.add_argument("--generator", metavar="CKPT", help="GAN checkpoint (default: the weights shipped in the package)")
    p.add_argument("--lexicon", metavar="FILE", help="words to synthesise: text file (one per line) or LMDB "
                   "(default: the words of the regime's training labels)")
    p.add_argument("--seeds", type=int, metavar="N", help="runs per arm, seeds train.seed .. train.seed + N - 1")
    p.add_argument("--steps", type=int, help="optimizer steps per run (both arms)")
    p.add_argument("--regime", choices=REGIMES, help="low: K training writers; full: all of them; both")
    p.add_argument("--writers", type=int, metavar="K", help="training writers kept in the low-resource regime")
    p.add_argument("--writer-seed", type=int, help="seed of the low-resource writer draw")
    p.add_argument("--data", metavar="DIR", help="a folder of train.lmdb, test.lmdb [, val.lmdb] (e.g. word LMDBs "
                   f"from recognizer.segment), or a TSV dataset with a split column (default {DEFAULT_DATA}; its "
                   "LMDBs are built once into OUT/data)")
    p.add_argument("--out", help="benchmark folder (default runs/benchmark/<config name>): runs/, data/, "
                   "report.json, report.md")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the config's; auto = cuda if available)")
    p.add_argument("--num-workers", type=int, help="DataLoader workers per run (overrides train.num_workers)")
    p.add_argument("--bootstrap", type=int, help="resamples of the paired bootstrap")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def _settings_from_args(args: argparse.Namespace) -> tuple[dict, dict]:
    settings, config = load_settings(args.config)
    for key in ("synthetic_ratio", "synthetic_source", "seeds", "steps", "regime", "writers", "writer_seed",
                "device", "bootstrap"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.num_workers is not None:
        config["train"]["num_workers"] = args.num_workers
    check_settings(settings, config)
    return settings, config


def out_dir(args: argparse.Namespace) -> Path:
    return Path(args.out or Path("runs") / "benchmark" / Path(args.config).stem)


def run_benchmark(args: argparse.Namespace, argv: list[str]) -> dict:
    settings, config = _settings_from_args(args)
    out = out_dir(args)
    source = make_source(settings["synthetic_source"], float(settings["synthetic_ratio"]), args.generator,
                         args.lexicon)
    progress = not args.no_progress
    splits = resolve_data(args.data or DEFAULT_DATA, out / "data", progress)
    device = select_device(settings["device"])
    full, val, alphabet = load_datasets(config, [str(splits.train)], str(splits.val) if splits.val else None)
    test = LmdbWordDataset(splits.test, height=config["data"]["height"])  # every label: unwritable ones count
    if len(test) == 0 or len(full) == 0:
        raise BenchmarkError(f"{splits.test if len(test) == 0 else splits.train}: no usable sample")
    check_unseen(test, [full, val])
    ctx = Context(settings, config, out, device, alphabet, val, test, splits, progress)

    regimes: list[Regime] = []
    if settings["regime"] in ("low", "both"):
        chosen = select_writers(full.writers, int(settings["writers"]), int(settings["writer_seed"]))
        d = config["data"]
        real = LmdbWordDataset(splits.train, height=d["height"], alphabet=alphabet, min_length=d["min_length"],
                               max_length=d["max_length"] or None, writers=chosen)
        regimes.append(Regime(f"low-{len(chosen)}w-seed{settings['writer_seed']}", "low", real, chosen))
    if settings["regime"] in ("full", "both"):
        regimes.append(Regime("full", "full", full, None))

    seeds = [config["train"]["seed"] + i for i in range(int(settings["seeds"]))]
    report_regimes = {}
    for regime in regimes:
        words = synthetic_words(source, regime.real, alphabet) if source else None
        base, syn = [], []
        for seed in seeds:  # arms interleaved: an interruption leaves paired results behind
            base.append(run_one(ctx, regime, None, seed, None))
            if source:
                syn.append(run_one(ctx, regime, source, seed, words))
        arms = {"baseline": summarize_arm("real only", 0.0, base)}
        entry = {"kind": regime.kind, "dir": str(out / "runs" / regime.name), "writer_ids": regime.writers,
                 "real_train_samples": len(regime.real), "real_train_writers": len(set(regime.real.writers) - {""}),
                 "lexicon_words": len(words) if words else None, "arms": arms}
        if source:
            arms["synthetic"] = summarize_arm(source.label, source.ratio, syn)
            entry["comparison"] = compare(base, syn, int(settings["bootstrap"]))
        report_regimes[regime.kind] = entry

    credit = data_credit(full.meta) or data_credit(test.meta)
    return {
        "title": "Synthetic-data benchmark",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.run", *argv]),
        "config": str(Path(args.config).resolve()),
        "protocol": {"recognizer_config": settings["recognizer"], "steps": int(settings["steps"]),
                     "batch_size": config["train"]["batch_size"], "seeds": seeds,
                     "evaluated_checkpoint": "lowest validation CER" if settings["evaluate"] == "best" and val
                     else "last", "device": str(device),
                     "metric": "corpus CER / WER of htr_augment.metrics (exact, after Unicode NFC), greedy "
                               "decoding; std over seeds (sample std); relative change = difference / baseline"},
        "data": {"origin": splits.origin, "train": _dataset_info(full), "val": _dataset_info(val),
                 "test": _dataset_info(test), "credit": credit},
        "synthetic": source.describe() if source else None,
        "regimes": report_regimes,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    out = out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True,
                        handlers=[logging.StreamHandler(sys.stderr),
                                  logging.FileHandler(out / "benchmark.log", encoding="utf-8")])
    try:
        rep = run_benchmark(args, argv)
    except (OSError, ValueError) as e:  # BenchmarkError, ConfigError, CheckpointError, InputError, missing files
        print(f"benchmarks.run: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbenchmarks.run: interrupted; rerun the same command to continue (finished runs are kept, "
              "the current one resumes from its last checkpoint)", file=sys.stderr)
        return 130
    md = markdown(rep)
    _write_json(out / "report.json", rep)
    write_atomic(out / "report.md", md)
    print(md)
    print(f"wrote {out / 'report.json'} and {out / 'report.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
