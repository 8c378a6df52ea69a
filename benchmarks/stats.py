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


# Student t, 97.5% quantile, by degrees of freedom 1-30 (beyond: 1.96): two-sided 95% intervals.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def seed_interval(differences: list[float]) -> list[float] | None:
    """Student-t 95% interval of the mean of per-seed paired differences (None below two seeds).

    The bootstrap interval resamples test samples only: it says how sure the difference is for
    these trained models, not for another training of them. Training seeds move an arm's CER by
    about a point on the CPU word study (validation writers, 6 seeds: std 1.0-1.6 pts), so a
    claim about the method needs this interval too; with 3 seeds it is wide (t = 4.30)."""
    n = len(differences)
    if n < 2:
        return None
    mean, sd = statistics.fmean(differences), statistics.stdev(differences)
    half = (T975[n - 2] if n - 1 <= len(T975) else 1.96) * sd / n ** 0.5
    return [mean - half, mean + half]


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
        per_seed = [s[metric] - b[metric] for b, s in pairs]
        diff = statistics.fmean(per_seed)
        lo, hi = bootstrap_ci(d, n, resamples, seed)
        out[metric] = {"baseline": base, "synthetic": statistics.fmean(s[metric] for _, s in pairs),
                       "difference": diff, "relative_change": diff / base if base else None, "ci95": [lo, hi],
                       "per_seed_difference": per_seed, "seed_ci95": seed_interval(per_seed)}
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
            "seeds_paired": c["bootstrap"]["seeds_paired"], "cer_seed_ci95": c["cer"]["seed_ci95"],
            "cer_per_seed_difference": c["cer"]["per_seed_difference"]}
