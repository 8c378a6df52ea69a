"""Comparing two arms of the benchmark: paired bootstrap intervals over the shared test samples."""
from __future__ import annotations

import statistics

import numpy as np

from recognizer.evaluate import bootstrap_ci

from .common import BenchmarkError

METRICS = (("cer", "char_errors", "chars"), ("wer", "word_errors", "words"))
BOOTSTRAP_METHOD = ("paired percentile bootstrap over test samples (same resample for both arms and every seed), "
                    "difference averaged over seeds")


def seed_stats(records: list[dict], metric: str) -> dict:
    values = [r[metric] for r in records]
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "per_seed": {str(r["seed"]): r[metric] for r in records}}


def compare(baseline: list[dict], synthetic: list[dict], resamples: int, seed: int = 0) -> dict:
    """`synthetic` minus `baseline` (any two arms: the second minus the first), seed by seed on the
    same test samples, averaged over seeds.

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
    out["bootstrap"] = {"method": BOOTSTRAP_METHOD, "level": 0.95, "resamples": resamples, "seed": seed,
                        "seeds_paired": len(pairs)}
    return out


def versus(reference: str, ref_records: list[dict], records: list[dict], resamples: int) -> dict:
    """An arm against a reference arm, flattened from `compare`: ci95 is the CER difference's."""
    c = compare(ref_records, records, resamples)
    return {"against": reference, "cer_diff_mean": c["cer"]["difference"], "ci95": c["cer"]["ci95"],
            "cer_relative_change": c["cer"]["relative_change"], "cer_reference": c["cer"]["baseline"],
            "wer_diff_mean": c["wer"]["difference"], "wer_ci95": c["wer"]["ci95"],
            "wer_relative_change": c["wer"]["relative_change"], "wer_reference": c["wer"]["baseline"],
            "seeds_paired": c["bootstrap"]["seeds_paired"]}
