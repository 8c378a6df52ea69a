"""Recognizers shipped in the package, loadable by name wherever a checkpoint path is taken.

    python -m recognizer.evaluate --checkpoint copiste-words --data data/words/test.lmdb --report reports/w
    python -m recognizer.segment --checkpoint copiste-lines --lines data/lines_test.lmdb --out words.lmdb
    python -m htr_augment.gan.evaluate --evaluator copiste-words ...
    load_recognizer("copiste-words")                      # from recognizer (a path works the same)

    python -m recognizer.pretrained list                  # names, files, sizes, test CER
    python -m recognizer.pretrained ship copiste-lines runs/copiste_lines/best.pt

`ship` turns a training checkpoint into the shipped file: the weights, config, alphabet and
provenance only (no optimizer, scheduler or RNG state: a fraction of the size, and nothing to
resume from), written atomically to recognizer/weights/NAME.pt. It then tests the shipped file
on the entry's test LMDB (bootstrap 95% intervals), stores the numbers in the weights
(`extra["metrics"]`) and writes the model card recognizer/weights/NAME.md. The weights are read
with the project's one checkpoint format (htr_augment.training.checkpoint, weights_only=True).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from htr_augment.atomic import write_atomic
from htr_augment.data.credit import COPISTE_CREDIT
from htr_augment.training.checkpoint import (CheckpointError, file_sha256, load_checkpoint, make_checkpoint,
                                             save_checkpoint)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CREDIT = "Copiste d'un jour, BAnQ, CC BY 4.0"
MODEL_NAME = "recognizer"  # as recognizer.model.MODEL_NAME (not imported: model.py imports this module)


@dataclass(frozen=True)
class Pretrained:
    name: str
    level: str  # lines | words
    config: str  # recognizer config it was trained with, relative to the repository
    data: str  # what it was trained and validated on
    train_command: str  # recreates the training checkpoint that `ship` turns into the weights
    checkpoint: str  # the training checkpoint `ship` takes (the path train_command writes)
    test_data: str  # LMDB the model card's numbers come from
    test_command: str  # builds test_data, when it is not there

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.pt"

    @property
    def card(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.md"

    @property
    def ship_command(self) -> str:
        return f"python -m recognizer.pretrained ship {self.name} {self.checkpoint}"


_LINES_BUILD = ("for s in train val test; do htr-build-lmdb --tsv ../shared/data/copiste/lines.tsv --split $s "
                "--out data/lines_$s.lmdb; done")

PRETRAINED: dict[str, Pretrained] = {p.name: p for p in (
    Pretrained(
        name="copiste-lines", level="lines", config="configs/recognizer/copiste_lines.toml",
        data="the 4,104 Copiste training lines (validation: 590 lines of other writers)",
        train_command=("python -m recognizer.train --config configs/recognizer/copiste_lines.toml "
                       "--train data/lines_train.lmdb --val data/lines_val.lmdb --out runs/copiste_lines"),
        checkpoint="runs/copiste_lines/best.pt", test_data="data/lines_test.lmdb", test_command=_LINES_BUILD),
    Pretrained(
        name="copiste-words", level="words", config="configs/recognizer/words.toml",
        data=("25,536 Copiste training words (the 4,104 training lines cut into words by the first GAN run's "
              "recognizer, see the README), validation: 3,362 words of other writers; real words only"),
        train_command=("OMP_NUM_THREADS=1 python -m recognizer.train --config configs/recognizer/words.toml "
                       "--train data/words/train.lmdb --val data/words/val.lmdb --out runs/words "
                       "--max-steps 2500 --num-workers 0"),
        checkpoint="runs/words/best.pt", test_data="data/words/test.lmdb",
        test_command=("for s in train val test; do python -m recognizer.segment --checkpoint "
                      "checkpoints/gan_cpu/last.pt --lines data/lines_$s.lmdb --out data/words/$s.lmdb "
                      "--min-score -1.5; done")),
)}


class PretrainedError(CheckpointError):
    """An unknown name, or a known one whose weights are not in the package yet."""


def resolve(name_or_path: str | os.PathLike) -> Path:
    """The weights file of a shipped name, or the path itself. A registered name always means
    the shipped weights; anything else that is not a file and looks like a name (no folder, no
    suffix) is refused with the list of names."""
    text = str(name_or_path)
    entry = PRETRAINED.get(text)
    if entry is not None:
        if not entry.path.is_file():
            raise PretrainedError(
                f"pretrained recognizer {text!r}: its weights {entry.path} are not in the package yet. "
                f"Train and ship them with:\n  {entry.train_command}\n  {entry.ship_command}")
        return entry.path
    path = Path(text)
    if not path.exists() and path.parent == Path(".") and not path.suffix:
        raise PretrainedError(f"{text!r} is neither a checkpoint file nor a pretrained recognizer; "
                              f"names: {', '.join(PRETRAINED)}")
    return path


def is_pretrained(name_or_path: str | os.PathLike) -> bool:
    return str(name_or_path) in PRETRAINED


# -- shipping -------------------------------------------------------------------------------

def export_weights(checkpoint: str | os.PathLike, out: str | os.PathLike, *, credit: str = CREDIT,
                   extra: dict | None = None) -> Path:
    """A recognizer training checkpoint (or shipped weights) as a weights-only file, written
    atomically (htr_augment.training.checkpoint.save_checkpoint: beside, fsync, rename)."""
    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint, map_location="cpu", kind="recognizer")
    if MODEL_NAME not in ckpt["models"]:
        raise CheckpointError(f"{checkpoint}: no {MODEL_NAME!r} weights in it")
    # Cloned: a state dict may view a larger storage, which torch.save would write whole.
    weights = {k: v.detach().clone().contiguous() for k, v in ckpt["models"][MODEL_NAME].items()}
    kept = {k: ckpt["extra"][k] for k in ("best_cer", "best_step", "total_steps") if k in ckpt.get("extra", {})}
    source = ckpt.get("extra", {}).get("source_sha256") or file_sha256(checkpoint)  # re-shipping keeps the origin
    kept.update(weights_only=True, source_checkpoint=str(checkpoint), source_sha256=source, data_credit=credit,
                parameters=sum(v.numel() for k, v in weights.items() if not k.endswith("num_batches_tracked")))
    kept.update(extra or {})
    small = make_checkpoint("recognizer", ckpt["config"], ckpt["alphabet"], ckpt["step"], ckpt["epoch"],
                            models={MODEL_NAME: weights}, extra=kept)
    return save_checkpoint(small, out)


def test_metrics(weights: str | os.PathLike, test_data: str | os.PathLike, *, bootstrap: int = 1000,
                 report: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """Greedy CER/WER of `weights` on `test_data` with bootstrap 95% intervals (recognizer.evaluate)."""
    from htr_augment.data import LmdbWordDataset

    from .evaluate import evaluate
    from .model import load_recognizer
    from .report import write_report
    model, alphabet, config = load_recognizer(weights)
    dataset = LmdbWordDataset(test_data, height=config["data"]["height"])
    if len(dataset) == 0:
        raise ValueError(f"{test_data}: no test sample")
    result = evaluate(model, alphabet, dataset, batch_size=config["train"]["eval_batch_size"], bootstrap=bootstrap,
                      checkpoint=str(weights), progress=progress)
    if report:
        write_report(result, report)
    return {"test_data": str(test_data), "samples": len(result.samples),
            "writers": len({s.writer for s in result.samples} - {""}), "decoder": result.decoder,
            "cer": result.cer, "wer": result.wer, "cer_ci95": list(result.ci["cer"]),
            "wer_ci95": list(result.ci["wer"]), "bootstrap": bootstrap}


def model_card(entry: Pretrained, ckpt: dict, size: int) -> str:
    """The markdown model card of shipped weights, from the registry entry and what the file holds."""
    x, tc = ckpt["extra"], ckpt["config"]["train"]
    m = x.get("metrics")
    lines = [f"# {entry.name}", "",
             f"A CTC recognizer (CRNN) of Copiste d'un jour **{entry.level}**, shipped with htr-augment. "
             f"Load it by name: `load_recognizer(\"{entry.name}\")`, `--checkpoint {entry.name}`"
             + (f", `--evaluator {entry.name}`" if entry.level == "words" else "") + ".", "",
             "| | |", "|---|---|",
             f"| file | `recognizer/weights/{entry.path.name}`, {size / 1e6:.1f} MB, weights only |",
             f"| parameters | {x.get('parameters', 0) / 1e6:.2f} M |",
             f"| config | `{entry.config}` ({ckpt['config']['data']['height']} px) |",
             f"| alphabet | {len(ckpt['alphabet'])} characters |",
             f"| training | {ckpt['step']:,} steps of {tc['batch_size']}, seed {tc['seed']} |",
             f"| best validation CER | {x['best_cer']:.2%} (step {x.get('best_step')}) |" if x.get("best_cer")
             is not None else "| best validation CER | n/a |",
             f"| data | {entry.data} |",
             f"| credit | {x.get('data_credit', CREDIT)} |",
             f"| shipped from | `{x.get('source_checkpoint')}` (SHA-256 `{x.get('source_sha256')}`) |"]
    if m:
        lo, hi = m["cer_ci95"]
        wlo, whi = m["wer_ci95"]
        lines += [f"| test CER | {m['cer']:.2%} [{lo:.2%}, {hi:.2%}] |",
                  f"| test WER | {m['wer']:.2%} [{wlo:.2%}, {whi:.2%}] |", "",
                  f"Test: `{m['test_data']}`, {m['samples']:,} {entry.level} of {m['writers']} writers never seen in "
                  f"training or validation; {m['decoder']} decoding, CER/WER exact after Unicode NFC, "
                  f"percentile-bootstrap 95% intervals ({m['bootstrap']} resamples)."]
    else:
        lines += ["", "Not tested yet."]
    lines += ["", "Reproduce:", "", "```bash", entry.train_command, entry.ship_command, "```", "",
              f"{COPISTE_CREDIT}", ""]
    return "\n".join(lines)


def ship(name: str, checkpoint: str | os.PathLike, *, test_data: str | None = None, bootstrap: int = 1000,
         report: str | None = None, progress: bool = True) -> Path:
    """Export `checkpoint` as the weights of `name`, test them, store the numbers in them and
    write the model card. The test runs on a temporary file, so a failed test ships nothing."""
    entry = PRETRAINED.get(name)
    if entry is None:
        raise PretrainedError(f"unknown pretrained recognizer {name!r}; names: {', '.join(PRETRAINED)}")
    test_data = test_data or entry.test_data
    if not (Path(test_data) / "data.mdb").is_file():
        raise FileNotFoundError(f"{test_data}: no test LMDB for the model card; build it with:\n  {entry.test_command}")
    entry.path.parent.mkdir(parents=True, exist_ok=True)
    staged = entry.path.with_name(entry.path.name + ".staged")
    try:
        export_weights(checkpoint, staged)
        metrics = test_metrics(staged, test_data, bootstrap=bootstrap, report=report, progress=progress)
        metrics["tested"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        export_weights(staged, staged, extra={"metrics": metrics, "source_checkpoint": str(checkpoint)})
        os.replace(staged, entry.path)
    finally:
        staged.unlink(missing_ok=True)
    ckpt = load_checkpoint(entry.path, kind="recognizer")
    write_atomic(entry.card, model_card(entry, ckpt, entry.path.stat().st_size))
    return entry.path


def describe() -> list[dict]:
    """Every registered name: file, size, and the test numbers stored in shipped weights."""
    out = []
    for entry in PRETRAINED.values():
        row = {"name": entry.name, "level": entry.level, "file": str(entry.path), "shipped": entry.path.is_file()}
        if row["shipped"]:
            x = torch.load(entry.path, map_location="cpu", weights_only=True)["extra"]
            row.update(size_mb=round(entry.path.stat().st_size / 1e6, 2), metrics=x.get("metrics"))
        else:
            row["create_with"] = [entry.train_command, entry.ship_command]
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m recognizer.pretrained", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the shipped names, their files, sizes and test numbers")
    s = sub.add_parser("ship", help="export a training checkpoint as NAME's weights, test them, write the card")
    s.add_argument("name", choices=list(PRETRAINED))
    s.add_argument("checkpoint", help="recognizer training checkpoint (e.g. runs/copiste_lines/best.pt)")
    s.add_argument("--test", metavar="LMDB", help="test LMDB of the model card (default: the entry's)")
    s.add_argument("--bootstrap", type=int, default=1000, help="resamples of the 95%% intervals")
    s.add_argument("--report", metavar="DIR", help="also write the full evaluation report there")
    s.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.command == "list":
        print(json.dumps(describe(), indent=2, ensure_ascii=False))
        return 0
    try:
        path = ship(args.name, args.checkpoint, test_data=args.test, bootstrap=args.bootstrap, report=args.report,
                    progress=not args.no_progress)
    except (OSError, ValueError) as e:  # CheckpointError, a missing test LMDB
        print(f"recognizer.pretrained: error: {e}", file=sys.stderr)
        return 2
    m = torch.load(path, map_location="cpu", weights_only=True)["extra"]["metrics"]
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {PRETRAINED[args.name].card}: test CER "
          f"{m['cer']:.2%} [{m['cer_ci95'][0]:.2%}, {m['cer_ci95'][1]:.2%}], WER {m['wer']:.2%} on {m['samples']:,} "
          f"samples of {m['test_data']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
