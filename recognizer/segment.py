"""Cut labelled text lines into labelled word images with a recognizer's CTC alignment.

    python -m recognizer.segment --checkpoint best.pt --lines lines.lmdb --out words.lmdb [--grid words.png]

For each line the known transcription is force-aligned to the model's frame posteriors
(recognizer.alignment); the frames between the last character of one word and the first
of the next (the space and the blanks around it) are the inter-word gap. Frame f covers
pixel columns [f * stride, (f + 1) * stride) of the model's input, scaled back to the
stored line, which is cut at its own resolution: inside each gap, at the middle of its
widest ink-free run (or at the gap's middle if it has none); each word is then trimmed
to its ink and padded with white. Words are split at spaces only, so
punctuation stays with its word. Lines whose alignment is impossible or poor (mean
per-frame log-probability of the Viterbi path below --min-score) are rejected and listed
in a TSV, as htr-build-lmdb does. The output LMDB is written atomically and resumably.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from htr_augment import __version__
from htr_augment.alphabet import Alphabet, normalize_text
from htr_augment.atomic import write_atomic, write_table_atomic
from htr_augment.data.credit import data_credit
from htr_augment.data.lmdb_format import (LmdbWriter, image_key, label_key, open_shared, read_meta,
                                          read_num_samples, source_key, writer_key)
from htr_augment.data.sources import RejectedSample, reject_counts
from htr_augment.images import decode_image, encode_png, ink_mask, pad_batch, resize_to_height, to_tensor

from .alignment import Alignment, AlignmentError, forced_align


@dataclass
class SegmentOptions:
    min_score: float = -1.0  # reject lines whose Viterbi path averages less log-prob per frame
    pad: int = 4  # white columns added on each side of a word
    trim: bool = True  # crop each word to its ink columns before padding
    snap: bool = True  # cut at the widest ink-free run inside the gap, not just its middle

    def fingerprint(self) -> dict:
        # -inf (keep everything) is not valid JSON: stored as None
        return {"min_score": self.min_score if math.isfinite(self.min_score) else None, "pad": self.pad,
                "trim": self.trim, "snap": self.snap}


def ink_columns(img: np.ndarray) -> np.ndarray:
    """(W,) bool: columns holding ink, ruled lines left out (htr_augment.images.ink_mask)."""
    return ink_mask(img).any(axis=0)


def _snap(ink: np.ndarray, a: int, b: int) -> int:
    """Middle of the widest ink-free run of columns in [a, b); the middle of [a, b) if none."""
    best, best_len = (a + b) // 2, 0
    x = a
    while x < b:
        if ink[x]:
            x += 1
            continue
        start = x
        while x < b and not ink[x]:
            x += 1
        if x - start > best_len:
            best, best_len = (start + x) // 2, x - start
    return best


def word_boundaries(alignment: Alignment, text: str, stride: float, width: int,
                    ink: np.ndarray | None = None) -> list[tuple[str, int, int]]:
    """(word, first column, end column) of each space-separated word of `text`.

    `alignment` is of the whole text (spaces included); `stride` is in pixels of the image
    being cut per frame. Without `ink`, cuts fall at the middle of each inter-word gap."""
    words = [(m.group(), m.start(), m.end()) for m in re.finditer(r"[^ ]+", text)]
    spans = alignment.char_spans()
    if len(spans) == len(text.replace(" ", "")) != len(text):
        # Aligned without its spaces (a word model has no space class): re-index by `text`.
        aligned = iter(spans)
        spans = [next(aligned) if c != " " else (0, 0) for c in text]
    cuts = [0]
    for (_, _, end), (_, start, _) in zip(words, words[1:]):
        a = min(width, round(spans[end - 1][1] * stride))  # first column after the word's last character frame
        b = min(width, round(spans[start][0] * stride))  # first column of the next word's first character frame
        cuts.append(_snap(ink, a, b) if ink is not None and b > a else (a + b) // 2)
    cuts.append(width)
    return [(w, x0, x1) for (w, _, _), x0, x1 in zip(words, cuts, cuts[1:])]


def crop_word(img: np.ndarray, x0: int, x1: int, ink: np.ndarray | None, pad: int) -> np.ndarray:
    """Columns [x0, x1) of a line, trimmed to its ink when `ink` is given, padded with white."""
    if ink is not None and ink[x0:x1].any():
        cols = np.flatnonzero(ink[x0:x1])
        x0, x1 = x0 + int(cols[0]), x0 + int(cols[-1]) + 1
    word = img[:, x0:x1]
    return np.pad(word, ((0, 0), (pad, pad)), constant_values=255) if pad else word.copy()


def segment_line(img: np.ndarray, text: str, log_probs, alphabet: Alphabet, stride: float,
                 opts: SegmentOptions) -> list[tuple[str, np.ndarray]]:
    """Word images of one line; `stride`: columns of `img` per frame. Raises RejectedSample with the reason."""
    if not text.strip():
        raise RejectedSample("no words", "label is empty")
    # A word recognizer (no space class) still places each character: the label is aligned
    # without its spaces and the inter-word gap is the blank run between two words.
    aligned = text if " " in alphabet else text.replace(" ", "")
    missing = alphabet.missing(aligned)
    if missing:
        raise RejectedSample("character outside alphabet", f"{' '.join(map(repr, missing))} in {text!r}")
    try:
        alignment = forced_align(log_probs, alphabet.encode(aligned))
    except AlignmentError as e:
        raise RejectedSample("alignment impossible", str(e)) from None
    if alignment.mean_logp < opts.min_score:
        raise RejectedSample("poor alignment score",
                             f"mean log-prob per frame {alignment.mean_logp:.3f} < {opts.min_score}")
    ink = ink_columns(img)
    out = []
    for word, x0, x1 in word_boundaries(alignment, text, stride, img.shape[1], ink if opts.snap else None):
        if x1 <= x0:
            raise RejectedSample("empty word crop", f"{word!r} gets columns [{x0}, {x1}) of {img.shape[1]}")
        out.append((word, crop_word(img, x0, x1, ink if opts.trim else None, opts.pad)))
    return out


@dataclass
class SegmentReport:
    out: Path
    lines: int
    lines_kept: int
    words: int
    words_rejected: int  # words of the rejected lines
    resumed_from: int
    rejects: list[list[str]] = field(default_factory=list)  # [source, reason, detail]
    rejects_path: Path | None = None

    def summary(self) -> str:
        lines = [f"kept {self.lines_kept} of {self.lines} lines: wrote {self.words} words to {self.out}"
                 + (f" ({self.resumed_from} from the interrupted run)" if self.resumed_from else "")]
        if self.rejects:
            lines.append(f"rejected {len(self.rejects)} lines with {self.words_rejected} words "
                         f"(listed in {self.rejects_path}):")
            lines += reject_counts(self.rejects)
        return "\n".join(lines)


def _read_line(txn, path: str, i: int) -> tuple[np.ndarray, str, str, str]:
    """(stored image, label, writer, source) of line i (1-based)."""
    raw = txn.get(label_key(i))
    if raw is None:
        raise ValueError(f"{path}: {label_key(i).decode()} is missing")
    img = decode_image(txn.get(image_key(i)) or b"", f"{path}#{i}")
    writer, source = txn.get(writer_key(i)), txn.get(source_key(i))
    return (img, normalize_text(raw.decode("utf-8")), writer.decode("utf-8") if writer else "",
            source.decode("utf-8") if source else f"{path}#{i}")


@torch.inference_mode()
def _posteriors(model, images: list[np.ndarray], device) -> list[torch.Tensor]:
    batch, widths = pad_batch([to_tensor(im) for im in images], model.stride)
    out = model(batch.to(device), widths.to(device))
    lp = out.log_probs.float().cpu()
    return [lp[: int(n), b] for b, n in enumerate(out.lengths.cpu().tolist())]


def segment_lines(model: torch.nn.Module, alphabet: Alphabet, lines: str | os.PathLike, out: str | os.PathLike,
                  opts: SegmentOptions | None = None, *, height: int | None = None, batch_size: int = 8,
                  device: str | torch.device = "cpu", checkpoint: str | None = None, resume: bool = False,
                  overwrite: bool = False, rejects_path: str | os.PathLike | None = None,
                  progress: bool = True) -> SegmentReport:
    """Segment every line of the LMDB `lines` into words written to the LMDB `out`.

    `height`: the model's input height (lines are resized to it for the model; the words
    are cut from the stored images). The model needs `stride` (input columns per frame)
    and returns RecognizerOutput."""
    opts = opts or SegmentOptions()
    out, lines = Path(out), str(lines)
    rejects_path = Path(rejects_path) if rejects_path else out.with_name(out.name + ".rejects.tsv")
    stride = int(model.stride)
    model.eval()
    env = open_shared(lines)  # one read-only handle per process, shared with any dataset over it
    with env.begin() as txn:
        n, lines_meta = read_num_samples(txn, lines), read_meta(txn)
    writer = LmdbWriter(out, {"lines": os.path.abspath(lines), "line_count": n, "checkpoint": checkpoint,
                              "height": height, "stride": stride, **opts.fingerprint()},
                        resume=resume, overwrite=overwrite)
    start, rejects = writer.state.get("next", 0), writer.state.get("rejects", [])
    kept, lost = writer.state.get("kept", 0), writer.state.get("lost", 0)  # lines kept, words of rejected lines
    bar = tqdm(total=n, initial=start, unit="line", desc=f"segmenting into {out.name}", disable=not progress,
               dynamic_ncols=True)
    try:
        for first in range(start, n, batch_size):
            with env.begin() as txn:
                batch = [_read_line(txn, lines, i + 1) for i in range(first, min(n, first + batch_size))]
            inputs = [resize_to_height(b[0], height) if height else b[0] for b in batch]
            posteriors = _posteriors(model, inputs, device)
            words = []  # added only once the whole batch is done, so a commit is never half a batch
            for (img, text, wid, source), small, lp in zip(batch, inputs, posteriors):
                try:  # frames -> columns of the stored image
                    segmented = segment_line(img, text, lp, alphabet, stride * img.shape[1] / small.shape[1], opts)
                except RejectedSample as e:
                    rejects.append([source, e.reason, str(e)])
                    lost += len(text.split())
                    continue
                kept += 1
                words += [(encode_png(crop), word, wid, f"{source}#word{k + 1}")
                          for k, (word, crop) in enumerate(segmented)]
            for w in words:
                writer.add(*w)
            writer.commit({"next": first + len(batch), "rejects": rejects, "kept": kept, "lost": lost})
            bar.update(len(batch))
            bar.set_postfix(words=writer.count, rejected=len(rejects), refresh=False)
    except BaseException:
        writer.close()  # the last commit is consistent: --resume continues from it
        raise
    finally:
        bar.close()
    labels, writers = zip(*writer.labels()) if writer.count else ((), ())
    meta = {
        "alphabet": Alphabet.from_labels(labels).chars,
        "image_height": lines_meta.get("image_height"),  # cut from the stored lines, as they are
        "counts": {"lines": n, "lines_kept": kept, "lines_rejected": len(rejects),
                   "rejected_by_reason": dict(Counter(r[1] for r in rejects)), "words": writer.count,
                   "words_rejected": lost,
                   "writers": len(set(writers))},
        "source": [f"segment:{lines}"] + list(lines_meta.get("source") or []),
        "segmentation": {"checkpoint": checkpoint, "stride": stride, **opts.fingerprint()},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool": f"recognizer.segment {__version__}",
    }
    credit = data_credit(lines_meta)
    if credit:
        meta["credit"] = credit
    report = SegmentReport(out, n, kept, writer.count, lost, writer.resumed_from, rejects,
                           rejects_path if rejects else None)
    if writer.count == 0:
        writer.close()  # nothing to publish; the partial stays for inspection
    else:
        writer.finish(meta)
    if rejects:
        write_table_atomic(rejects_path, [["source", "reason", "detail"]] + rejects)
    return report


def render_grid(words: Sequence[tuple[np.ndarray, str]], columns: int = 4, font_size: int = 18) -> np.ndarray:
    """A grey image of word images with their labels underneath, `columns` per row."""
    from PIL import Image, ImageDraw, ImageFont  # Pillow comes with torchvision; only needed here

    if not words:
        raise ValueError("no words to draw")
    try:  # Pillow looks in the system font folders; its built-in font lacks accented letters
        font = ImageFont.truetype("DejaVuSans.ttf", font_size)
    except OSError:
        font = ImageFont.load_default(size=font_size)
    gap, label_h = 8, font_size + 6
    rows = [words[i:i + columns] for i in range(0, len(words), columns)]
    col_w = [max(max(img.shape[1], int(font.getlength(text)) + 2) for img, text in words[c::columns])
             for c in range(min(columns, len(words)))]
    row_h = [max(img.shape[0] for img, _ in row) + label_h for row in rows]
    canvas = Image.new("L", (sum(col_w) + gap * (len(col_w) + 1), sum(row_h) + gap * (len(rows) + 1)), 235)
    draw = ImageDraw.Draw(canvas)
    y = gap
    for row, h in zip(rows, row_h):
        x = gap
        for (img, text), w in zip(row, col_w):
            canvas.paste(Image.fromarray(img), (x, y))
            draw.text((x, y + img.shape[0] + 2), text, fill=0, font=font)
            x += w + gap
        y += h + gap
    return np.asarray(canvas)


def read_words(path: str | os.PathLike, count: int) -> list[tuple[np.ndarray, str]]:
    """The first `count` (image, label) pairs of a word LMDB."""
    with open_shared(path).begin() as txn:
        n = min(count, read_num_samples(txn, path))
        return [(decode_image(txn.get(image_key(i)), f"{path}#{i}"), txn.get(label_key(i)).decode("utf-8"))
                for i in range(1, n + 1)]


def write_grid(words_lmdb: str | os.PathLike, png: str | os.PathLike, count: int = 24, columns: int = 4) -> Path:
    return write_atomic(png, encode_png(render_grid(read_words(words_lmdb, count), columns)))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m recognizer.segment", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="The output goes to OUT.partial and is renamed to OUT when complete; "
                                       "after an interruption rerun the same command with --resume.")
    p.add_argument("--checkpoint", required=True, help="recognizer checkpoint (.pt), a GAN training checkpoint "
                   "(its R) or a shipped name: copiste-lines, copiste-words")
    p.add_argument("--lines", required=True, help="LMDB of labelled text lines (e.g. from htr-build-lmdb)")
    p.add_argument("--out", required=True, help="output LMDB of word images")
    p.add_argument("--min-score", type=float, default=SegmentOptions.min_score,
                   help="reject lines whose forced alignment averages less log-probability per frame "
                        "(default %(default)s; --min-score=-inf keeps every alignable line)")
    p.add_argument("--pad", type=int, default=SegmentOptions.pad, help="white columns around each word "
                   "(default %(default)s)")
    p.add_argument("--no-trim", action="store_true", help="keep the full cut instead of trimming to the ink")
    p.add_argument("--no-snap", action="store_true", help="cut at the middle of each gap, ignoring the ink")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--grid", metavar="PNG", help="also draw the first --grid-count words with their labels")
    p.add_argument("--grid-count", type=int, default=24)
    p.add_argument("--rejects", help="rejects TSV (default: OUT.rejects.tsv beside OUT)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run into OUT")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.pad < 0 or args.batch_size < 1 or args.grid_count < 1:
        p.error("--pad must not be negative; --batch-size and --grid-count must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from .evaluate import load_model

    args = parse_args(argv)
    opts = SegmentOptions(args.min_score, args.pad, not args.no_trim, not args.no_snap)
    try:
        model, alphabet, config = load_model(args.checkpoint, args.device)
        report = segment_lines(model, alphabet, args.lines, args.out, opts,
                               height=(config or {}).get("data", {}).get("height"), batch_size=args.batch_size,
                               device=args.device, checkpoint=args.checkpoint, resume=args.resume,
                               overwrite=args.overwrite, rejects_path=args.rejects, progress=not args.no_progress)
        print(report.summary(), file=sys.stderr)
        if report.words == 0:
            print("recognizer.segment: error: no word was written", file=sys.stderr)
            return 1
        if args.grid:
            print(f"grid of words: {write_grid(args.out, args.grid, args.grid_count)}", file=sys.stderr)
    except (OSError, ValueError) as e:  # FileExistsError, CheckpointError, a bad LMDB ...
        print(f"recognizer.segment: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nrecognizer.segment: interrupted; rerun with --resume to continue {args.out}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
