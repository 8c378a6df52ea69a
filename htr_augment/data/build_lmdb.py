"""htr-build-lmdb: turn labelled images into one LMDB (see lmdb_format for the layout).

Examples:
  htr-build-lmdb --tsv ../shared/data/copiste/lines.tsv --split train --out train.lmdb
  htr-build-lmdb --gt gt.txt --height 64 --out words.lmdb
  htr-build-lmdb --folder seed_words/ --out seed.lmdb
  htr-build-lmdb --alto ../shared/data/copiste/pages --out pages.lmdb
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..alphabet import Alphabet
from ..atomic import write_table_atomic
from ..images import encode_png, resize_to_height
from .lmdb_format import LmdbWriter
from .sources import (InputError, Item, RejectedSample, normalize_label, read_alto, read_folder, read_gt,
                      read_lmdb, read_tsv, reject_counts)

from .. import __version__


def ctc_min_frames(label: str) -> int:
    """Frames CTC needs for `label`: one per character, plus a blank between repeats."""
    return len(label) + sum(a == b for a, b in zip(label, label[1:]))


@dataclass
class BuildOptions:
    height: int | None = None  # resize to this height (grayscale PNG); None keeps the original bytes
    alphabet: Alphabet | None = None  # reject labels with characters outside it
    ctc_stride: int = 4  # a recogniser emits one CTC frame per this many pixels of width ...
    ctc_height: int = 64  # ... once the image is resized to this height
    writer: str | None = None  # overrides the writer of every sample

    def fingerprint(self) -> dict:
        return {"height": self.height, "alphabet": self.alphabet.chars if self.alphabet else None,
                "ctc_stride": self.ctc_stride, "ctc_height": self.ctc_height, "writer": self.writer}


@dataclass
class BuildReport:
    out: Path
    written: int
    resumed_from: int
    rejects: list[list[str]] = field(default_factory=list)  # [source, reason, detail]
    rejects_path: Path | None = None

    def summary(self) -> str:
        lines = [f"wrote {self.written} samples to {self.out}"
                 + (f" ({self.resumed_from} from the interrupted build)" if self.resumed_from else "")]
        if self.rejects:
            lines.append(f"rejected {len(self.rejects)} samples (listed in {self.rejects_path}):")
            lines += reject_counts(self.rejects)
        return "\n".join(lines)


def _prepare(item: Item, opts: BuildOptions) -> tuple[bytes, str]:
    """Load, check and encode one item; raise RejectedSample with the reason."""
    if item.label is None:  # a row that could not be parsed: its loader raises the reason
        item.load()
    label = normalize_label(item.label or "")
    if not label:
        raise RejectedSample("empty label", "label is empty")
    if opts.alphabet is not None:
        missing = opts.alphabet.missing(label)
        if missing:
            shown = " ".join(f"{c!r}" for c in missing)
            raise RejectedSample("character outside alphabet", f"{shown} in {label!r}")
    data, img = item.load()
    h, w = img.shape[:2]
    frames = int(w * opts.ctc_height / h) // opts.ctc_stride
    if frames < ctc_min_frames(label):
        raise RejectedSample("too narrow for CTC",
                             f"{w}x{h} px gives {frames} frames at height {opts.ctc_height} / stride "
                             f"{opts.ctc_stride}; {label!r} needs {ctc_min_frames(label)}")
    if opts.height is not None:
        data = encode_png(resize_to_height(img, opts.height))
    elif data is None:
        data = encode_png(img)
    return data, label


def build(items: Iterable[Item], out: str | os.PathLike, opts: BuildOptions, *, inputs: Sequence[str] = (),
          resume: bool = False, overwrite: bool = False, rejects_path: str | os.PathLike | None = None,
          commit_every: int = 512, progress: bool = True) -> BuildReport:
    """Write `items` to the LMDB `out`. Atomic and resumable; see lmdb_format.LmdbWriter."""
    out = Path(out)
    rejects_path = Path(rejects_path) if rejects_path else out.with_name(out.name + ".rejects.tsv")
    items = list(items)
    writer = LmdbWriter(out, {"inputs": list(inputs), "items": len(items), **opts.fingerprint()},
                        resume=resume, overwrite=overwrite, commit_every=commit_every)
    start = writer.state.get("next", 0)
    rejects: list[list[str]] = writer.state.get("rejects", [])
    state = lambda i: {"next": i, "rejects": rejects}  # noqa: E731
    bar = tqdm(total=len(items), initial=start, unit="img", desc=f"building {out.name}",
               disable=not progress, dynamic_ncols=True)
    i = start
    try:
        for i in range(start, len(items)):
            item = items[i]
            try:
                data, label = _prepare(item, opts)
            except RejectedSample as e:
                rejects.append([item.source, e.reason, str(e)])
            else:
                writer.add(data, label, opts.writer if opts.writer is not None else item.writer, item.source)
            bar.update(1)
            if i % 64 == 0:
                bar.set_postfix(written=writer.count, rejected=len(rejects), refresh=False)
            if writer.pending() >= commit_every:
                writer.commit(state(i + 1))
    except KeyboardInterrupt:
        # Everything before item i is fully processed: keep it for --resume.
        writer.commit(state(i))
        writer.close()
        bar.close()
        raise
    except BaseException:
        writer.close()  # the last commit stays consistent; the rest is redone on resume
        bar.close()
        raise
    bar.close()
    writer.commit(state(len(items)))
    labels, writers = zip(*writer.labels()) if writer.count else ((), ())
    reasons = Counter(r[1] for r in rejects)
    meta = {
        "alphabet": Alphabet.from_labels(labels).chars,
        "image_height": opts.height,
        "counts": {"inputs": len(items), "written": writer.count, "rejected": len(rejects),
                   "rejected_by_reason": dict(reasons), "writers": len(set(writers))},
        "source": list(inputs),
        "options": opts.fingerprint(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool": f"htr-augment {__version__}",
    }
    report = BuildReport(out, writer.count, writer.resumed_from, rejects, rejects_path if rejects else None)
    if writer.count == 0:
        writer.close()  # nothing to publish; the partial stays for inspection
    else:
        writer.finish(meta)
    if rejects:
        write_table_atomic(rejects_path, [["source", "reason", "detail"]] + rejects)
    return report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="htr-build-lmdb",
        description="Build an LMDB of labelled text images, readable by any tool that reads the "
                    "standard text-recognition layout (image-%09d / label-%09d / num-samples), "
                    "plus writer ids and a JSON 'meta' key.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Inputs can be combined; they are read in the order tsv, gt, folder, alto, lmdb.\n"
               "Re-encode an LMDB at the height a model reads (smaller, faster to load):\n"
               "  htr-build-lmdb --lmdb data/words/train.lmdb --height 32 --out data/words32/train.lmdb\n"
               "The build goes to OUT.partial and is renamed to OUT when complete; after an\n"
               "interruption rerun the same command with --resume.")
    src = p.add_argument_group("inputs (at least one)")
    src.add_argument("--tsv", action="append", default=[], metavar="FILE",
                     help="TSV with header 'file text [document] [split]', paths relative to the TSV")
    src.add_argument("--split", help="with --tsv: keep rows whose 'split' column equals this (e.g. train)")
    src.add_argument("--gt", action="append", default=[], metavar="FILE",
                     help="ground-truth file, one 'path<TAB>label' per line, paths relative to it")
    src.add_argument("--folder", action="append", default=[], metavar="DIR",
                     help="folder of '<word> (<n>).png' images; label = the part before ' ('")
    src.add_argument("--alto", action="append", default=[], metavar="PATH",
                     help="ALTO XML file or folder of them, page images beside; one sample per TextLine")
    src.add_argument("--lmdb", action="append", default=[], metavar="DIR",
                     help="an LMDB in the standard layout (labels, writer ids and sources kept): to "
                          "re-encode it (--height), filter it (--alphabet) or merge it with other inputs")
    p.add_argument("--out", required=True, help="output LMDB directory")
    p.add_argument("--height", type=int, help="resize every image to this height (keeps aspect; "
                   "stored as grayscale PNG). Default: keep the original bytes")
    p.add_argument("--alphabet", help="alphabet file (JSON as written by this tool, or plain text of "
                   "the allowed characters); labels with other characters are rejected")
    p.add_argument("--ctc-stride", type=int, default=4,
                   help="reject images narrower than the label needs for CTC: one frame per this many "
                        "pixels (default %(default)s) ...")
    p.add_argument("--ctc-height", type=int, default=64,
                   help="... measured after resizing to this height (default %(default)s)")
    p.add_argument("--writer", help="writer id for every sample (default: from the input)")
    p.add_argument("--rejects", help="rejects TSV (default: OUT.rejects.tsv beside OUT)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted build of OUT")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if not (args.tsv or args.gt or args.folder or args.alto or args.lmdb):
        p.error("give at least one input: --tsv, --gt, --folder, --alto or --lmdb")
    if any(Path(src).resolve() == Path(args.out).resolve() for src in args.lmdb):
        p.error(f"--lmdb {args.out} is also --out: write the re-encoded LMDB elsewhere")
    if args.split and not args.tsv:
        p.error("--split applies to --tsv inputs only")
    if args.height is not None and args.height < 8:
        p.error("--height must be at least 8")
    if args.ctc_stride < 1 or args.ctc_height < 1:
        p.error("--ctc-stride and --ctc-height must be positive")
    return args


def collect_items(args: argparse.Namespace) -> tuple[list[Item], list[str]]:
    items: list[Item] = []
    inputs: list[str] = []
    for path in args.tsv:
        items += read_tsv(path, args.split)
        inputs.append(f"tsv:{path}" + (f"[split={args.split}]" if args.split else ""))
    for path in args.gt:
        items += read_gt(path)
        inputs.append(f"gt:{path}")
    for path in args.folder:
        items += read_folder(path)
        inputs.append(f"folder:{path}")
    for path in args.alto:
        items += read_alto(path)
        inputs.append(f"alto:{path}")
    for path in args.lmdb:
        items += read_lmdb(path)
        inputs.append(f"lmdb:{path}")
    return items, inputs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        alphabet = Alphabet.load(args.alphabet) if args.alphabet else None
        items, inputs = collect_items(args)
        opts = BuildOptions(height=args.height, alphabet=alphabet, ctc_stride=args.ctc_stride,
                            ctc_height=args.ctc_height, writer=args.writer)
        report = build(items, args.out, opts, inputs=inputs, resume=args.resume, overwrite=args.overwrite,
                       rejects_path=args.rejects, progress=not args.no_progress)
    except (InputError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"htr-build-lmdb: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nhtr-build-lmdb: interrupted; rerun with --resume to continue {args.out}", file=sys.stderr)
        return 130
    print(report.summary(), file=sys.stderr)
    if report.written == 0:
        print("htr-build-lmdb: error: no sample was written", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
