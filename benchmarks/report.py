"""The benchmark's report files: report.json, report.md and a self-contained report.html
(every arm side by side per regime, each synthetic arm's words as an embedded PNG grid),
each written atomically. The layout of report.json is described in benchmarks.run."""
from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

from htr_augment.atomic import write_atomic

REFERENCES = (("baseline", "real only"), ("fonts", "fonts"))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _pts(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f} pts"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.{0 if seconds >= 10 else 1}f} s"


def _mean_std(st: dict) -> str:
    return f"{_pct(st['mean'])} ± {100 * st['std']:.2f}" if st["std"] is not None else f"{_pct(st['mean'])} (one seed)"


def _difference(v: dict | None, metric: str) -> str:
    """'-7.11 pts (-11.3%) [-7.74, -6.54]' (interval in pts) for a vs_* entry, '' where there is none."""
    if v is None:
        return ""
    lo, hi = v["ci95"] if metric == "cer" else v["wer_ci95"]
    rel = v[f"{metric}_relative_change"]
    rel = "" if rel is None else f" ({100 * rel:+.1f}%)"
    return f"{_pts(v[f'{metric}_diff_mean'])}{rel} [{100 * lo:+.2f}, {100 * hi:+.2f}]"


def _steps(steps: int | list[int]) -> str:
    return ", ".join(map(str, steps)) if isinstance(steps, list) else str(steps)


def _unit(rep: dict) -> str:
    """What the synthetic sources wrote: words, or lines (--level lines); reports before lines: words."""
    return rep["synthetic"].get("unit", "words")


def _texts_of(unit: str) -> str:
    return "corpus" if unit == "lines" else "lexicon"


def arm_table(reg: dict, unit: str = "words") -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a regime's arms, shared by the markdown and the HTML report."""
    refs = [(key, name) for key, name in REFERENCES if any(a.get(f"vs_{key}") for a in reg["arms"].values())]
    header = ["arm", "CER (mean ± std, pts)", "WER (mean ± std, pts)"]
    for _, name in refs:
        header += [f"CER vs {name} [95% CI]", f"WER vs {name} [95% CI]"]
    # Reports made before the seed interval existed have none: no column then.
    seeds = any((a.get("vs_baseline") or {}).get("cer_seed_ci95") for a in reg["arms"].values())
    if seeds:
        header.append("CER vs real only, over seeds [95% t]")
    header += [f"synthetic {unit}", "runs", "steps", "wall time / run"]
    rows = []
    for arm in reg["arms"].values():
        row = [arm["label"], _mean_std(arm["cer"]), _mean_std(arm["wer"])]
        for key, _ in refs:
            row += [_difference(arm.get(f"vs_{key}"), "cer"), _difference(arm.get(f"vs_{key}"), "wer")]
        if seeds:
            ci = (arm.get("vs_baseline") or {}).get("cer_seed_ci95")
            row.append(f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else "")
        row += [f"{arm['synthetic_words']:,}", str(len(arm["runs"])), _steps(arm["steps"]), _minutes(arm["wall_s"])]
        rows.append(row)
    return header, rows


def _sources_text(syn: dict) -> list[str]:
    out = []
    for kind, src in syn["sources"].items():
        if kind == "gan":
            t = src.get("style_temperature", 1.0)
            legible = (f", words misread by `{src['legible_by']}` written again in up to {src['legible_tries']} "
                       "styles" if src.get("legible_by") else "")
            mix = src.get("style_mix", 1.0)
            styled = (f", {'' if mix == 1 else f'{mix:.0%} of the words '}in the styles of {src['styles']}"
                      if src.get("styles") else "")
            prior = not src.get("styles") or mix < 1  # the temperature scales prior styles only
            # Further generators (--generator A,B): each writes an equal share, in its own hand.
            also = " and ".join(f"`{g}` (SHA-256 `{sha}`)" for g, sha in
                                zip(src.get("also_generators", []), src.get("also_generators_sha256", [])))
            also = f"; with {also}, each generator writing an equal share of the words" if also else ""
            out.append(f"GAN `{src['generator']}` (SHA-256 `{src['generator_sha256']}`" + also
                       + (f", style temperature {t:g}" if t != 1.0 and prior else "") + legible + styled + ")")
        else:
            out.append(f"handwriting fonts ({', '.join(src['fonts'])})")
    return out


def _weight_text(syn: dict) -> str:
    """How the lexicon's words are drawn (reports before --lexicon-weight existed: by type)."""
    if syn.get("lexicon_weight", "type") == "token":
        return ", each word as often as it is listed (--lexicon-weight token)"
    return ""


def _pool_text(pool: dict) -> str:
    built = f"reused (built in {_minutes(pool['build_s'])})" if pool["reused"] else \
        f"built in {_minutes(pool['build_s'])}"
    unit = pool.get("unit", "words")
    return (f"{pool['source']}: {pool['words']:,} {unit} from a {_texts_of(unit)} of {pool['lexicon_words']:,}, "
            f"{built}, `{pool['path']}`")


def _regime_title(reg: dict) -> str:
    title = "Low-resource" if reg["kind"] == "low" else "Full"
    return (f"{title}: {_count(reg['real_train_writers'], 'training writer')}, "
            f"{_count(reg['real_train_samples'], 'real training sample')}")


def _segmentation_text(seg: dict | None) -> str | None:
    if not seg or not seg.get("segmented"):
        return None
    splits = "; ".join(f"{k} {v['words']:,} words from {v['lines_kept']:,} of {v['lines']:,} lines"
                       for k, v in seg["splits"].items())
    how = f"reused from `{seg['dir']}`" if seg.get("reused") else f"in {_minutes(seg['seconds'])}"
    return (f"Words: the lines cut by the line recognizer `{seg['segmenter']}` (SHA-256 "
            f"`{seg['key']['segmenter_sha256']}`), {how}: {splits}.")


def _reference_text(ref: dict | None) -> str | None:
    if not ref:
        return None
    if "error" in ref:
        return f"Reference recognizer `{ref['name']}` left out: {ref['error']}"
    lo, hi = ref["cer_ci95"]
    return (f"For reference, `{ref['name']}` (a larger word recognizer trained on every training writer, "
            f"{ref['steps']:,} steps) reads the same {ref['samples']:,} test words at CER {_pct(ref['cer'])} "
            f"[{100 * lo:.2f}, {100 * hi:.2f}], WER {_pct(ref['wer'])}.")


def _wall_text(rep: dict) -> str | None:
    w = rep.get("wall_s")
    if not w:
        return None
    return (f"Wall time of this invocation: {_minutes(w['study'])} (data {_minutes(w['data'])}, runs "
            f"{_minutes(w['runs'])}; runs finished before and reused caches cost nothing here).")


def validation_curves(reg: dict, arm: str = "baseline") -> tuple[list[str], list[list[str]]]:
    """(header, rows): validation CER by step, one column per seed of `arm` (empty if none was logged)."""
    runs = [r for r in reg["arms"].get(arm, {}).get("runs", []) if r.get("val_curve")]
    if not runs:
        return [], []
    steps = sorted({int(s) for r in runs for s, _ in r["val_curve"]})
    by_seed = [{int(s): c for s, c in r["val_curve"]} for r in runs]
    header = ["step"] + [f"val CER, seed {r['seed']}" for r in runs]
    return header, [[f"{s:,}"] + [_pct(c.get(s)) if s in c else "" for c in by_seed] for s in steps]


def _intro(rep: dict) -> list[str]:
    p, d, syn, cache = rep["protocol"], rep["data"], rep["synthetic"], rep["cache"]
    lines = [f"Level: {p.get('level', 'lines')}. Arms: {', '.join(p['arms'])}."]
    lines += [t for t in (_segmentation_text(rep.get("segmentation")), _wall_text(rep)) if t]
    if syn["sources"]:
        unit, of = _unit(rep), _texts_of(_unit(rep))
        written = "whole lines, one style per line" if unit == "lines" else "words"
        lines.append(f"Synthetic sources ({written}): {'; '.join(_sources_text(syn))}; {syn['ratio']:.0%} of each "
                     f"batch in every synthetic arm (gan+fonts: half of it from each); {syn['pool']:,} cached {unit} "
                     f"per source and {of} (seed {syn['pool_seed']}), shared by every seed and arm; {of}: "
                     f"{syn['lexicon']}{_weight_text(syn)}.")
        lines.append(f"Cached synthetic {unit}: {_minutes(cache['build_s_this_run'])} spent building "
                     f"{_count(cache['built_this_run'], 'cache')} in this run ({_minutes(cache['build_s_all'])} "
                     "for all of them, whenever built), not counted in the runs' wall time.")
    lines += [f"Recognizer `{p['recognizer_config']}`, {p['steps']} steps of batch {p['batch_size']} per run, "
              f"seeds {', '.join(map(str, p['seeds']))}; tested checkpoint: {p['evaluated_checkpoint']}; "
              f"device {p['device']}.",
              ("Tested on the VALIDATION writers (--split val: for choosing settings; not the test result). "
               if p.get("tested_on") == "val" else "")
              + f"Test: {_count(d['test']['samples'], 'sample')} from {_count(d['test']['writers'], 'writer')} unseen "
              f"in training (`{d['test']['path']}`); validation: "
              + (f"{_count(d['val']['samples'], 'sample')} from {_count(d['val']['writers'], 'writer')}."
                 if d["val"] else "none."),
              f"Metrics: {p['metric']}."]
    ref = _reference_text(rep.get("reference"))
    return lines + ([ref] if ref else [])


def _outro(rep: dict) -> list[str]:
    b, d = rep["protocol"]["bootstrap"], rep["data"]
    return [f"Intervals: {b['method']}; {b['resamples']} resamples, seed {b['seed']}. Negative = fewer errors "
            "than the arm compared with. Over seeds: a Student-t interval of the per-seed differences, for "
            "another training of the same arms (the bootstrap holds the trained models fixed).",
            d["credit"] or f"Data: {d['origin']} (no credit recorded in its LMDB meta)"]


def markdown(rep: dict) -> str:
    lines = [f"# {rep['title']}", ""]
    for para in _intro(rep):
        lines += [para, ""]
    for reg in rep["regimes"].values():
        header, rows = arm_table(reg, _unit(rep))
        lines += [f"## {_regime_title(reg)}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        if reg["writer_ids"]:
            lines += ["", f"Writers kept: {', '.join(reg['writer_ids'])}."]
        vh, vrows = validation_curves(reg)
        if vrows:
            lines += ["", "The baseline's validation CER along training:", "",
                      "| " + " | ".join(vh) + " |", "|" + "---|" * len(vh)] + ["| " + " | ".join(r) + " |" for r in vrows]
        for pool in reg["pools"].values():
            lines += ["", f"Synthetic {_unit(rep)}, {_pool_text(pool)}."]
        for arm, grid in reg["grids"].items():
            lines += ["", f"![{arm} {_unit(rep)}]({grid})"]
        lines.append("")
    for para in _outro(rep):
        lines += [para, ""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}figure img{max-width:100%;background:#fff}
.credit{margin-top:2em;font-size:.9em;color:#555}"""


def _code(text: str) -> str:
    """Markdown `code` spans of escaped text as <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _embedded_png(path: Path) -> str:
    return f"data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"


def html_page(rep: dict, out: Path) -> str:
    """The report as one HTML file; grids (PNG paths relative to `out`) are embedded as base64."""
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(rep['title'])}</title>"
             f"<style>{_CSS}</style></head><body><h1>{e(rep['title'])}</h1>"]
    parts += [f"<p>{_code(para)}</p>" for para in _intro(rep)]
    for reg in rep["regimes"].values():
        header, rows = arm_table(reg, _unit(rep))
        parts.append(f"<h2>{e(_regime_title(reg))}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header)
                     + "</tr>" + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
                     + "</table>")
        if reg["writer_ids"]:
            parts.append(f"<p>Writers kept: {e(', '.join(reg['writer_ids']))}.</p>")
        vh, vrows = validation_curves(reg)
        if vrows:
            parts.append("<p>The baseline's validation CER along training:</p>"
                         "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in vh) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in vrows)
                         + "</table>")
        unit = _unit(rep)
        parts += [f"<p>Synthetic {unit}, {_code(_pool_text(pool))}.</p>" for pool in reg["pools"].values()]
        for arm, grid in reg["grids"].items():
            parts.append(f"<figure><img alt='{e(arm)} synthetic {unit}' src='{_embedded_png(out / grid)}'>"
                         f"<figcaption>{e(reg['arms'][arm]['label'])}: the first {unit} it mixes in</figcaption>"
                         "</figure>")
    intervals, credit = _outro(rep)
    parts += [f"<p>{e(intervals)}</p>", f"<p class='credit'>{e(credit)}</p></body></html>\n"]
    return "".join(parts)


def write_reports(out: str | os.PathLike, rep: dict) -> dict[str, Path]:
    """report.json, report.md and report.html in `out`; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    write_atomic(paths["md"], markdown(rep))
    write_atomic(paths["html"], html_page(rep, out))
    write_atomic(paths["json"], json.dumps(rep, ensure_ascii=False, indent=2) + "\n")
    return paths
