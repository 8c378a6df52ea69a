"""Compare two arms of finished benchmark runs, seed by seed on the same test samples.

    python -m benchmarks.compare runs/bench_val/runs/low-10w-seed0/gan-ac7367a8974b-T1.5-r0.5-pool10000 \\
        runs/bench_val/runs/low-10w-seed0/gan-dc058f2b176d-T1.5-r0.5-pool10000

Each argument is an arm folder (OUT/runs/REGIME/ARM, holding seedN/result.json), e.g. two
generators' GAN arms, which one report does not set side by side. Prints the second minus the
first: the paired bootstrap interval over test samples (the trained models held fixed) and the
Student-t interval over the per-seed differences (another training of both arms), as in the
reports. Only seeds finished in both folders are paired.

--by-class and --by-length add where the errors fall, over the paired seeds' test/samples.csv:
the share of reference characters of each class (lowercase, capital, accented, digit,
punctuation) that each arm gets wrong (substituted or deleted), and each arm's CER by the
reference word's length; e.g. which characters or words fonts fix and a GAN does not.
--by-op splits each arm's CER into substitutions, deletions and insertions (per reference
character, one minimal alignment per sample; the three add up to the CER): insertions are the
errors --by-class leaves out.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from htr_augment.metrics import CHAR_CLASSES, class_errors, edit_operations

from .common import BenchmarkError
from .stats import compare


def finished_seeds(arm_dir: Path, seeds: set[int] | None = None) -> dict[int, dict]:
    """The result.json records under ARM/seedN, by seed (only `seeds` when given)."""
    if not arm_dir.is_dir():
        raise BenchmarkError(f"{arm_dir}: no such arm folder (expected OUT/runs/REGIME/ARM)")
    records = {}
    for path in sorted(arm_dir.glob("seed*/result.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            seed = int(record["seed"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BenchmarkError(f"{path}: not a benchmark result ({e})") from None
        if seeds is None or seed in seeds:
            records[seed] = record
    return records


def compare_arms(first: Path, second: Path, seeds: set[int] | None = None, resamples: int = 1000) -> dict:
    a, b = finished_seeds(first, seeds), finished_seeds(second, seeds)
    common = sorted(set(a) & set(b))
    if not common:
        raise BenchmarkError(f"no finished seed in common: {first} has {sorted(a) or 'none'}, "
                             f"{second} has {sorted(b) or 'none'}")
    result = compare([a[s] for s in common], [b[s] for s in common], resamples)
    return {"first": str(first), "second": str(second), "seeds": common, **result}


WORD_LENGTH_EDGES = (1, 2, 3, 4, 6, 9)  # reference lengths [1], [2], [3], [4, 5], [6, 8], [9, inf)


def samples_path(arm_dir: Path, seed: int) -> Path:
    return arm_dir / f"seed{seed}" / "test" / "samples.csv"


def seed_samples(arm_dir: Path, seed: int) -> list[dict]:
    """The rows of a run's test/samples.csv (recognizer.evaluate's per-sample report)."""
    path = samples_path(arm_dir, seed)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise BenchmarkError(f"{path}: cannot read the run's test samples ({e.strerror}); --by-class and "
                             "--by-length need them") from None
    missing = {"reference", "hypothesis", "char_errors", "length"} - set(rows[0] if rows else ())
    if missing:
        raise BenchmarkError(f"{path}: no {', '.join(sorted(missing))} column; not a recognizer.evaluate samples.csv")
    return rows


def arm_class_errors(arm_dir: Path, seeds: list[int]) -> dict[str, tuple[int, int]]:
    """class_errors summed over the seeds' test samples."""
    total = dict.fromkeys(CHAR_CLASSES, (0, 0))
    for seed in seeds:
        pairs = [(row["reference"], row["hypothesis"]) for row in seed_samples(arm_dir, seed)]
        for k, (e, n) in class_errors(pairs).items():
            total[k] = (total[k][0] + e, total[k][1] + n)
    return total


def length_bin(length: int, edges=WORD_LENGTH_EDGES) -> str:
    lo = max(e for e in edges if e <= max(length, edges[0]))
    i = edges.index(lo)
    hi = edges[i + 1] - 1 if i + 1 < len(edges) else None
    return f"{lo}+" if hi is None else (str(lo) if hi == lo else f"{lo}-{hi}")


def arm_length_errors(arm_dir: Path, seeds: list[int]) -> dict[str, tuple[int, int]]:
    """(character errors, reference characters) per reference-length bin, over the seeds."""
    total = {length_bin(e): (0, 0) for e in WORD_LENGTH_EDGES}
    for seed in seeds:
        for line, row in enumerate(seed_samples(arm_dir, seed), start=2):
            try:
                errors, length = int(row["char_errors"]), int(row["length"])
            except (TypeError, ValueError):
                raise BenchmarkError(f"{samples_path(arm_dir, seed)} line {line}: char_errors "
                                     f"{row['char_errors']!r} and length {row['length']!r} must be integers") from None
            k = length_bin(length)
            total[k] = (total[k][0] + errors, total[k][1] + length)
    return total


EDIT_OPS = {"S": "substitution", "D": "deletion", "I": "insertion"}


def arm_op_errors(arm_dir: Path, seeds: list[int]) -> dict[str, tuple[int, int]]:
    """(edits of each kind, reference characters) over the seeds' test samples."""
    counts, chars = dict.fromkeys(EDIT_OPS.values(), 0), 0
    for seed in seeds:
        for row in seed_samples(arm_dir, seed):
            chars += len(row["reference"])
            for op, _, _ in edit_operations(row["reference"], row["hypothesis"]):
                counts[EDIT_OPS[op]] += 1
    return {k: (n, chars) for k, n in counts.items()}


BREAKDOWNS = {"class": arm_class_errors, "length": arm_length_errors, "op": arm_op_errors}


def breakdown(c: dict, by: str) -> dict:
    """Per character class (by="class"), reference-length bin (by="length") or edit kind (by="op"):
    reference characters per seed and each arm's share of them in error (class: substituted or
    deleted; length: CER; op: that kind of edit per reference character)."""
    count = BREAKDOWNS[by]
    seeds = c["seeds"]
    a, b = count(Path(c["first"]), seeds), count(Path(c["second"]), seeds)
    return {k: {"chars_per_seed": a[k][1] // len(seeds), "first": a[k][0] / a[k][1] if a[k][1] else None,
                "second": b[k][0] / b[k][1] if b[k][1] else None} for k in a}


def format_breakdown(rows: dict, by: str) -> str:
    title = {"class": "errors by reference character class (substituted or deleted; insertions left out):",
             "length": "CER by reference length (characters):",
             "op": "CER by edit (per reference character; the three add up to the CER):"}[by]
    lines = [title, f"  {by:<12} {'chars':>6} {'first':>7} {'second':>7} {'difference':>10}"]
    for k, v in rows.items():
        if v["first"] is None:
            continue
        lines.append(f"  {k:<12} {v['chars_per_seed']:>6} {100 * v['first']:>6.2f}% {100 * v['second']:>6.2f}% "
                     f"{_pts(v['second'] - v['first']):>6} pts")
    return "\n".join(lines)


def _pts(x: float) -> str:
    return f"{100 * x:+.2f}"


def format_comparison(c: dict) -> str:
    lines = [f"second: {c['second']}", f"first:  {c['first']}", f"seeds paired: {c['seeds']}"]
    for metric in ("cer", "wer"):
        m = c[metric]
        seed_ci = m["seed_ci95"]
        lines.append(f"{metric.upper()}: {100 * m['synthetic']:.2f}% vs {100 * m['baseline']:.2f}%, difference "
                     f"{_pts(m['difference'])} pts, bootstrap 95% [{_pts(m['ci95'][0])}, {_pts(m['ci95'][1])}]"
                     + (f", over seeds 95% t [{_pts(seed_ci[0])}, {_pts(seed_ci[1])}]" if seed_ci else "")
                     + "; per seed " + " ".join(_pts(d) for d in m["per_seed_difference"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("first", type=Path, help="arm folder compared against (OUT/runs/REGIME/ARM)")
    p.add_argument("second", type=Path, help="arm folder compared (second minus first)")
    p.add_argument("--seeds", help="only these seeds, a comma list (default: every seed finished in both)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--by-class", action="store_true",
                   help="also each arm's errors by reference character class, from the runs' test/samples.csv")
    p.add_argument("--by-length", action="store_true",
                   help="also each arm's CER by reference length (1, 2, 3, 4-5, 6-8, 9+ characters)")
    p.add_argument("--by-op", action="store_true",
                   help="also each arm's CER split into substitutions, deletions and insertions")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    args = p.parse_args(argv)
    try:
        seeds = {int(s) for s in args.seeds.split(",")} if args.seeds else None
    except ValueError:
        p.error(f"--seeds: a comma list of integers, not {args.seeds!r}")
    try:
        c = compare_arms(args.first, args.second, seeds, args.bootstrap)
        for by in BREAKDOWNS:
            if getattr(args, f"by_{by}"):
                c[f"by_{by}"] = breakdown(c, by)
    except BenchmarkError as e:
        print(f"benchmarks.compare: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(c, indent=1))
    else:
        print("\n".join([format_comparison(c)] + [format_breakdown(c[f"by_{by}"], by) for by in BREAKDOWNS
                                                  if f"by_{by}" in c]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
