"""Export a trained GAN's EMA generator as small, self-describing weights.

    python -m htr_augment.gan.export runs/gan/last.pt --metrics reports/gan/report.json \
        --out htr_augment/weights/generator.pt

Keeps what WordGenerator.load needs (the EMA generator and style encoder, their config, the
alphabet, the training words' mean width per character) plus provenance: the training step, the data
credit, the source checkpoint's SHA-256 and the quality metrics of
`python -m htr_augment.gan.evaluate`. D, R and the optimizers are dropped, so the file is a
fraction of a training checkpoint; `--resume` training from it is not possible (use the
training checkpoint for that).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..images import check_ink_floor, check_ink_quantile, check_margin
from .word_generator import check_style_temperature
from ..training.checkpoint import (CheckpointError, file_sha256, load_checkpoint, make_checkpoint,
                                   save_checkpoint)


def export_generator(checkpoint: str | Path, out: str | Path, metrics: dict | None = None,
                     writer_widths: list[float] | str | Path | None = None,
                     style_temperature: float | None = None, live: bool = False,
                     line_style_temperature: float | None = None, ink_quantile: float | None = None,
                     ink_floor: float | None = None, margin: float | None = None) -> Path:
    """The small weights file: the EMA generator and style encoder (`live`: the live ones, to judge
    them beside the EMA, which once hid a collapse), with `style_temperature` (if given) as the
    generator's default (WordGenerator.style_temperature, chosen on validation writers) and
    `line_style_temperature` as that of whole lines; `ink_quantile` (if given): every word's ink
    stretched so that this quantile is full ink (WordGenerator.ink_quantile), then `ink_floor` (if
    given): ink below it made background (WordGenerator.ink_floor); `margin` (if given): background
    on each side of every word, a fraction of its height (WordGenerator.margin). `writer_widths` (data.writer_px_per_char of
    the training words, or an LMDB of them to measure at the checkpoint's height) fills in what
    checkpoints of older trainers lack, for per-style widths."""
    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint, map_location="cpu", kind="gan")
    if isinstance(writer_widths, (str, Path)):
        from ..data import LmdbWordDataset
        from .data import writer_px_per_char
        lmdb_path = writer_widths
        writer_widths = writer_px_per_char(LmdbWordDataset(lmdb_path, height=ckpt["config"]["data"]["height"]))
        if not writer_widths:
            raise CheckpointError(f"{lmdb_path}: no writer ids with 5 or more words")
    models = ckpt["models"]
    key = "generator" if live or "generator_ema" not in models else "generator_ema"
    if key not in models:
        raise CheckpointError(f"{checkpoint}: GAN checkpoint without {'live ' if live else ''}generator weights")
    config = {k: v for k, v in ckpt["config"].items() if k in ("data", "generator", "style", "train")}
    extra = dict(ckpt.get("extra", {}))
    # Re-exporting an export (to change its temperatures or ink) keeps which weights it holds.
    weights = extra.get("weights", key) if set(models) <= {"generator_ema", "style_encoder_ema"} else key
    extra.update(source_checkpoint=checkpoint.name, source_sha256=file_sha256(checkpoint), weights=weights)
    if metrics is not None:
        extra["metrics"] = metrics
    if style_temperature is not None:
        extra["style_temperature"] = check_style_temperature(style_temperature)
    if line_style_temperature is not None:  # SyntheticLineDataset's default (else the words' one)
        extra["line_style_temperature"] = check_style_temperature(line_style_temperature)
    if ink_quantile is not None:
        extra["ink_quantile"] = check_ink_quantile(ink_quantile)
    if ink_floor is not None:
        extra["ink_floor"] = check_ink_floor(ink_floor)
    if margin is not None:
        extra["margin"] = check_margin(margin)
    if writer_widths is not None and not extra.get("writer_px_per_char"):
        extra["writer_px_per_char"] = list(writer_widths)
    kept = {"generator_ema": models[key]}
    e_key = "style_encoder" if live or "style_encoder_ema" not in models else "style_encoder_ema"
    if e_key in models:  # writes in the hand of real word images (WordGenerator.generate(style=...))
        kept["style_encoder_ema"] = models[e_key]
    extra.pop("balancer", None)
    small = make_checkpoint("gan", config, ckpt["alphabet"], ckpt["step"], ckpt["epoch"], models=kept, extra=extra)
    return save_checkpoint(small, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m htr_augment.gan.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="GAN training checkpoint (runs/NAME/last.pt)")
    p.add_argument("--out", required=True, help="where to write the generator weights")
    p.add_argument("--metrics", help="report.json of python -m htr_augment.gan.evaluate, stored with the weights")
    p.add_argument("--writer-widths-from", metavar="LMDB",
                   help="the GAN's training words: store their writers' widths per character when the "
                        "checkpoint lacks them (trained before per-style widths), so styles differ in width")
    p.add_argument("--style-temperature", type=float, metavar="T", help="store T as the generator's default style "
                   "temperature (prior styles at T times the fitted prior's spread; default: 1, none stored)")
    p.add_argument("--line-style-temperature", type=float, metavar="T", help="store T as the default style "
                   "temperature of whole lines (SyntheticLineDataset; default: the words' one)")
    p.add_argument("--ink-quantile", type=float, metavar="Q", help="store Q as the generator's ink stretch: "
                   "each written word's ink scaled so that its Q quantile (e.g. 0.99) is full ink, "
                   "pen-dark strokes instead of G's faint grey (default: none, G's own ink)")
    p.add_argument("--ink-floor", type=float, metavar="F", help="store F as the generator's ink floor: after "
                   "the stretch, ink below F (e.g. 0.15) is made background and the rest rescaled, removing "
                   "G's grey haze and soft stroke edges (default: none)")
    p.add_argument("--margin", type=float, metavar="F", help="store F as the generator's side margin: "
                   "background F times the height wide on each side of every word, as segmented real words "
                   "have (e.g. 0.1; default: none, G's words end at their last column)")
    p.add_argument("--live", action="store_true", help="export the live generator and style encoder instead of "
                   "their EMA (to judge both: the EMA can hide a collapse or average styles away)")
    args = p.parse_args(argv)
    metrics = None
    if args.metrics:
        try:
            metrics = json.loads(Path(args.metrics).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            p.error(f"--metrics {args.metrics}: {e}")
    try:
        path = export_generator(args.checkpoint, args.out, metrics, args.writer_widths_from, args.style_temperature,
                                live=args.live, line_style_temperature=args.line_style_temperature,
                                ink_quantile=args.ink_quantile, ink_floor=args.ink_floor, margin=args.margin)
    except (CheckpointError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
