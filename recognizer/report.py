"""Evaluation report files: report.json, report.md, a self-contained report.html
(worst samples embedded as base64 PNG) and samples.csv, each written atomically."""
from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from htr_augment.atomic import write_atomic

if TYPE_CHECKING:
    from .evaluate import EvalResult

NORMALISATION_NOTES = {
    "exact": "texts compared as they are, after Unicode NFC",
    "case-insensitive": "both texts case-folded",
    "accent-stripped": "combining accents removed (é -> e) from both texts",
    "case-and-accent-insensitive": "case-folded and accents removed",
}


def summary(result: EvalResult) -> dict:
    """The JSON-able report (per-sample rows are in samples.csv)."""
    by_index = {s.index: s for s in result.samples}
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": result.checkpoint,
        "data": result.data,
        "decoder": result.decoder,
        "samples": len(result.samples),
        "exact_matches": sum(s.char_errors == 0 for s in result.samples),
        "normalisation": {"headline": "exact", "text": "Unicode NFC", "variants": NORMALISATION_NOTES},
        "metrics": {name: {"cer": c.cer, "wer": c.wer, "char_errors": c.char_errors, "chars": c.char_total,
                           "word_errors": c.word_errors, "words": c.word_total}
                    for name, c in result.counts.items()},
        "confidence_intervals": result.ci,
        "operations": result.operations,
        "confusions": [{"reference": r, "hypothesis": h, "count": n} for r, h, n in result.confusions],
        "by_length": result.by_length,
        "worst": [{"index": i, "writer": by_index[i].writer, "reference": by_index[i].reference,
                   "hypothesis": by_index[i].hypothesis, "char_errors": by_index[i].char_errors,
                   "length": by_index[i].length} for i in result.worst],
    }


def samples_csv(result: EvalResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "writer", "reference", "hypothesis", "char_errors", "length", "word_errors", "words"])
    for s in result.samples:
        w.writerow([s.index, s.writer, s.reference, s.hypothesis, s.char_errors, s.length, s.word_errors, s.words])
    return buf.getvalue()


def _show(char: str) -> str:
    return "∅" if char == "" else ("␣" if char == " " else char)


def markdown(rep: dict) -> str:
    ci = rep["confidence_intervals"]
    ex = rep["metrics"]["exact"]
    lines = ["# Recognizer evaluation", "",
             f"- checkpoint: `{rep['checkpoint']}`", f"- data: `{rep['data'].get('path')}` ({rep['samples']} samples)",
             f"- decoder: {rep['decoder']}",
             f"- normalisation: headline numbers are **exact**: {NORMALISATION_NOTES['exact']}; variants below",
             "",
             f"**CER {ex['cer']:.2%}** (95% CI {ci['cer'][0]:.2%} – {ci['cer'][1]:.2%}), "
             f"**WER {ex['wer']:.2%}** (95% CI {ci['wer'][0]:.2%} – {ci['wer'][1]:.2%}); "
             f"{rep['exact_matches']} of {rep['samples']} samples exactly right. "
             f"Intervals: {ci['method']}, {ci['resamples']} resamples, seed {ci['seed']}.", "",
             "| normalisation | CER | WER | char errors / chars | word errors / words |", "|---|---|---|---|---|"]
    for name, m in rep["metrics"].items():
        lines.append(f"| {name}: {NORMALISATION_NOTES.get(name, '')} | {m['cer']:.2%} | {m['wer']:.2%} | "
                     f"{m['char_errors']} / {m['chars']} | {m['word_errors']} / {m['words']} |")
    op = rep["operations"]
    lines += ["", f"Character edits (exact): {op['substitutions']} substitutions, {op['deletions']} deletions, "
                  f"{op['insertions']} insertions.", "", "## By reference length", "",
              "| characters | samples | CER | WER |", "|---|---|---|---|"]
    lines += [f"| {b['bin']} | {b['samples']} | {b['cer']:.2%} | {b['wer']:.2%} |" for b in rep["by_length"]]
    lines += ["", "## Most frequent confusions (reference → hypothesis, ∅ = nothing, ␣ = space)", "",
              "| reference | hypothesis | count |", "|---|---|---|"]
    lines += [f"| `{_show(c['reference'])}` | `{_show(c['hypothesis'])}` | {c['count']} |" for c in rep["confusions"]]
    lines += ["", "## Worst samples", "", "| # | writer | reference | hypothesis | char errors |",
              "|---|---|---|---|---|"]
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines += [f"| {w['index']} | {w['writer']} | {esc(w['reference'])} | {esc(w['hypothesis'])} | "
              f"{w['char_errors']} / {w['length']} |" for w in rep["worst"]]
    if rep["data"].get("credit"):
        lines += ["", rep["data"]["credit"]]
    return "\n".join(lines) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
.sample{border-bottom:1px solid #ddd;padding:.6em 0}.sample img{max-width:100%;background:#fff}
.ref{color:#064}.hyp{color:#a00}.credit{margin-top:2em;font-size:.9em;color:#555}code{font-size:1.05em}"""


def html_page(rep: dict, images: dict[int, bytes]) -> str:
    e = html.escape
    ci = rep["confidence_intervals"]
    ex = rep["metrics"]["exact"]
    rows = lambda cells: "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells)  # noqa: E731
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Recognizer evaluation</title>"
             f"<style>{_CSS}</style></head><body><h1>Recognizer evaluation</h1>",
             f"<p>checkpoint <code>{e(str(rep['checkpoint']))}</code> · "
             f"data <code>{e(str(rep['data'].get('path')))}</code>"
             f" ({rep['samples']} samples) · decoder: {e(rep['decoder'])}</p>",
             f"<p><b>CER {ex['cer']:.2%}</b> (95% CI {ci['cer'][0]:.2%} – {ci['cer'][1]:.2%}) · "
             f"<b>WER {ex['wer']:.2%}</b> (95% CI {ci['wer'][0]:.2%} – {ci['wer'][1]:.2%}) · "
             f"{rep['exact_matches']} of {rep['samples']} exactly right. Normalisation of the headline: exact "
             f"({e(NORMALISATION_NOTES['exact'])}). Intervals: {e(ci['method'])}, {ci['resamples']} resamples, "
             f"seed {ci['seed']}.</p>",
             "<table><tr><th>normalisation</th><th>CER</th><th>WER</th><th>char errors / chars</th>"
             "<th>word errors / words</th></tr>",
             rows([(f"{e(n)} <small>({e(NORMALISATION_NOTES.get(n, ''))})</small>", f"{m['cer']:.2%}",
                    f"{m['wer']:.2%}", f"{m['char_errors']} / {m['chars']}", f"{m['word_errors']} / {m['words']}")
                   for n, m in rep["metrics"].items()]), "</table>"]
    op = rep["operations"]
    parts += [f"<p>Character edits (exact): {op['substitutions']} substitutions, {op['deletions']} deletions, "
              f"{op['insertions']} insertions.</p><h2>By reference length</h2>"
              "<table><tr><th>characters</th><th>samples</th><th>CER</th><th>WER</th></tr>",
              rows([(b["bin"], b["samples"], f"{b['cer']:.2%}", f"{b['wer']:.2%}") for b in rep["by_length"]]),
              "</table><h2>Most frequent confusions</h2><p>∅ = nothing (deletion or insertion), ␣ = space</p>"
              "<table><tr><th>reference</th><th>hypothesis</th><th>count</th></tr>",
              rows([(f"<code>{e(_show(c['reference']))}</code>", f"<code>{e(_show(c['hypothesis']))}</code>",
                     c["count"]) for c in rep["confusions"]]),
              "</table><h2>Worst samples</h2>"]
    for w in rep["worst"]:
        png = images.get(w["index"])
        src = f"data:image/png;base64,{base64.b64encode(png).decode()}" if png else ""
        img = f"<img alt='sample {w['index']}' src='{src}'>" if png else ""
        parts.append(f"<div class='sample'>{img}<div>#{w['index']} · writer {e(w['writer'])} · "
                     f"{w['char_errors']} char errors / {w['length']}</div>"
                     f"<div class='ref'>reference: {e(w['reference'])}</div>"
                     f"<div class='hyp'>prediction: {e(w['hypothesis'])}</div></div>")
    if rep["data"].get("credit"):
        parts.append(f"<p class='credit'>{e(rep['data']['credit'])}</p>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(result: EvalResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write report.json, report.md, report.html and samples.csv into out_dir; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rep = summary(result)
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html",
             "csv": out / "samples.csv"}
    write_atomic(paths["csv"], samples_csv(result))
    write_atomic(paths["md"], markdown(rep))
    write_atomic(paths["html"], html_page(rep, result.worst_images))
    write_atomic(paths["json"], json.dumps(rep, ensure_ascii=False, indent=2) + "\n")
    return paths
