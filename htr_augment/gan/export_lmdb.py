"""htr-generate-lmdb: write generated words or lines for offline training, in the
project's standard LMDB or in the folder layouts Kraken and PyLaia train on.

    htr-generate-lmdb --lexicon words.txt -n 100000 --out synth.lmdb
    htr-generate-lmdb --lexicon train.lmdb --ngram 3 -n 5000 --out oov.lmdb --height 64
    htr-generate-lmdb --lines --corpus corpus.txt --format kraken --height 64 --out synth_kraken
    htr-generate-lmdb --lines --corpus corpus.txt --format pylaia --height 128 --out synth_pylaia
    htr-generate-lmdb --lines --corpus corpus.txt --source fonts --out fonts_lines.lmdb

The LMDB is the text-recognition benchmark layout (image-%09d, label-%09d, num-samples).
Sample i is item i of SyntheticWordDataset (words), SyntheticLineDataset (--lines) or their
font counterparts (--source fonts) for the seed, so an interrupted export resumes
(--resume) with the same result. Corpus lines that cannot be written are listed in
OUT.rejects.tsv and summarised, not silently dropped.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from tqdm import tqdm

from .. import __version__
from ..alphabet import Alphabet, AlphabetError
from ..data.lmdb_format import LmdbWriter
from ..export_formats import WRITERS
from ..images import encode_png, to_uint8
from ..lexicon import NgramSampler, load_lexicon
from ..synthetic import SyntheticWordDataset
from ..training.checkpoint import CheckpointError

FORMATS = ("lmdb", *WRITERS)


def export(synth, n: int, out: str, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
           source: dict | None = None, fmt: str = "lmdb", val_every: int = 20) -> int:
    """Write items 0..n-1 of `synth` (any dataset of this project with seed, height, alphabet)."""
    fingerprint = {"n": n, "seed": synth.seed, "height": synth.height, **(source or {})}
    if fmt == "lmdb":
        writer = LmdbWriter(out, fingerprint, resume=resume, overwrite=overwrite)
    elif fmt == "pylaia":
        writer = WRITERS[fmt](out, {**fingerprint, "val_every": val_every}, resume=resume, overwrite=overwrite,
                              val_every=val_every)
    elif fmt in WRITERS:
        writer = WRITERS[fmt](out, fingerprint, resume=resume, overwrite=overwrite)
    else:
        raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    start = writer.state.get("next", 0)
    every = getattr(synth, "chunk_size", 32) * 16
    unit = "line" if hasattr(synth, "corpus") else "word"
    try:
        with tqdm(total=n, initial=start, unit=unit, desc=f"generating {out}", disable=not progress) as bar:
            for i in range(start, n):
                s = synth[i]
                writer.add(encode_png(to_uint8(s.image)), s.text, s.writer, f"synthetic:{i}")
                bar.update(1)
                if (i + 1) % every == 0:
                    writer.commit({"next": i + 1})
    except BaseException:
        writer.close()  # everything up to the last commit stays; --resume redoes the rest
        raise
    writer.commit({"next": n})
    labels = [label for label, _ in writer.labels()]
    alphabet = getattr(synth, "alphabet", None) or Alphabet.from_labels(labels)
    gen = getattr(synth, "generator", None)
    stats = getattr(synth, "stats", None)
    credit = (gen.info.get("data_credit", "") if gen is not None else "") or \
        (stats.info.get("credit", "") if stats is not None else "")
    writer.finish({
        "alphabet": alphabet.chars, "image_height": synth.height,
        "counts": {"written": writer.count, "rejected": 0, "writers": len(set(w for _, w in writer.labels()))},
        "source": [f"htr-augment {type(synth).__name__}" + (f" {gen.info.get('path', '')}" if gen is not None else "")],
        "options": fingerprint, "credit": credit,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool": f"htr-augment {__version__}",
    })
    return writer.count


def make_dataset(args) -> tuple[object, int]:
    """The dataset the options ask for and the number of items to write."""
    if args.lines:
        from ..lines import FontLineDataset, SyntheticLineDataset
        height = args.height or 64
        if args.source == "fonts":  # the generator's alphabet, so that both sources write the same lines
            from .word_generator import WordGenerator
            synth = FontLineDataset(args.corpus, length=args.n, seed=args.seed, height=height, stats=args.stats,
                                    alphabet=WordGenerator.load(args.checkpoint).alphabet)
        else:
            synth = SyntheticLineDataset(args.checkpoint, args.corpus, length=args.n, seed=args.seed, height=height,
                                         stats=args.stats, device=args.device)
        rejects = synth.corpus.rejects
        if rejects:
            path = synth.corpus.write_rejects(Path(args.out).with_name(Path(args.out).name + ".rejects.tsv"))
            print(f"{len(rejects)} corpus lines rejected (summarised above), listed in {path}", file=sys.stderr)
        return synth, len(synth)
    words = load_lexicon(args.lexicon)
    lexicon = NgramSampler(words, n=args.ngram) if args.ngram else words
    if args.source == "fonts":
        from ..fonts import FontWordDataset
        return FontWordDataset(lexicon, length=args.n, seed=args.seed, height=args.height or 64), args.n
    return SyntheticWordDataset(args.checkpoint, lexicon, length=args.n, seed=args.seed, height=args.height,
                                device=args.device), args.n


def fingerprint_source(args) -> dict:
    """What the samples depend on beyond n, seed and height (an export resumes only if unchanged)."""
    if args.lines:
        return {"corpus": str(args.corpus), "lines": True, "source": args.source, "checkpoint": str(args.checkpoint),
                "stats": str(args.stats)}
    source = {"lexicon": str(args.lexicon), "ngram": args.ngram, "checkpoint": str(args.checkpoint)}
    return source if args.source == "gan" else {**source, "source": args.source}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="htr-generate-lmdb", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lexicon", help="words: a text file (one per line) or an LMDB (its labels)")
    p.add_argument("--lines", action="store_true", help="write whole lines of --corpus instead of words")
    p.add_argument("--corpus", help="with --lines: a text file (one line of text per line) or an LMDB (its labels)")
    p.add_argument("-n", type=int, help="number of samples (words: required; lines: default one per corpus line)")
    p.add_argument("--out", required=True, help="output LMDB directory, or folder for --format kraken/pylaia")
    p.add_argument("--format", default="lmdb", choices=FORMATS,
                   help="lmdb (default; the text-recognition benchmark layout), kraken (PNG + .gt.txt pairs for "
                        "ketos train -f path) or pylaia (images/, syms.txt, ID c h a r s tables)")
    p.add_argument("--source", default="gan", choices=("gan", "fonts"), help="the generator or handwriting fonts")
    p.add_argument("--checkpoint", "-c", help="GAN checkpoint (default: the weights shipped in the package)")
    p.add_argument("--stats", help="line layout statistics JSON (default: the ones shipped with the weights)")
    p.add_argument("--ngram", type=int, default=0,
                   help="instead of lexicon words, sample pseudo-words from a character n-gram model of "
                        "the lexicon (out-of-vocabulary text), of this order")
    p.add_argument("--height", type=int, help="image height (default: the generator's for words, 64 for lines)")
    p.add_argument("--val-every", type=int, default=20, help="pylaia: every N-th sample goes to val.txt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--resume", action="store_true", help="continue an interrupted export")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.lines and not args.corpus:
        p.error("--lines needs --corpus")
    if not args.lines and not args.lexicon:
        p.error("give --lexicon (words) or --lines --corpus (lines)")
    if not args.lines and args.n is None:
        p.error("-n is required for words")
    if args.n is not None and args.n < 1:
        p.error("-n must be positive")
    try:
        synth, n = make_dataset(args)
        n = export(synth, n, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
                   fmt=args.format, val_every=args.val_every,
                   source=fingerprint_source(args))
    except (CheckpointError, AlphabetError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"htr-generate-lmdb: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nhtr-generate-lmdb: interrupted; rerun with --resume to continue {args.out}", file=sys.stderr)
        return 130
    print(f"wrote {n} generated {'lines' if args.lines else 'words'} to {args.out} ({args.format})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
