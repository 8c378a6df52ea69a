"""Compare two arms of finished benchmark runs, seed by seed on the same test samples.

    python -m benchmarks.compare runs/bench_val/runs/low-10w-seed0/gan-ac7367a8974b-T1.5-r0.5-pool10000 \\
        runs/bench_val/runs/low-10w-seed0/gan-dc058f2b176d-T1.5-r0.5-pool10000

Each argument is an arm folder (OUT/runs/REGIME/ARM, holding seedN/result.json), e.g. two
generators' GAN arms, which one report does not set side by side. Prints the second minus the
first: the paired bootstrap interval over test samples (the trained models held fixed) and the
Student-t interval over the per-seed differences (another training of both arms), as in the
reports. Only seeds finished in both folders are paired.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    args = p.parse_args(argv)
    try:
        seeds = {int(s) for s in args.seeds.split(",")} if args.seeds else None
    except ValueError:
        p.error(f"--seeds: a comma list of integers, not {args.seeds!r}")
    try:
        c = compare_arms(args.first, args.second, seeds, args.bootstrap)
    except BenchmarkError as e:
        print(f"benchmarks.compare: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(c, indent=1) if args.json else format_comparison(c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
