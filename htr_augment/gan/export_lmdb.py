"""htr-generate-lmdb: write generated words into an LMDB in the standard layout.

    htr-generate-lmdb --lexicon words.txt -n 100000 --out synth.lmdb
    htr-generate-lmdb --lexicon train.lmdb --ngram 3 -n 5000 --out oov.lmdb --height 64

Any tool that reads the text-recognition LMDB layout (image-%09d, label-%09d,
num-samples) can then train on them offline. Sample i is SyntheticWordDataset item i
for the seed, so an interrupted export resumes (--resume) with the same result.
"""
from __future__ import annotations

import argparse
import datetime
import sys

from tqdm import tqdm

from .. import __version__
from ..alphabet import Alphabet, AlphabetError
from ..data.lmdb_format import LmdbWriter
from ..images import encode_png, to_uint8
from ..lexicon import NgramSampler, load_lexicon
from ..synthetic import SyntheticWordDataset
from ..training.checkpoint import CheckpointError


def export(synth: SyntheticWordDataset, n: int, out: str, *, resume: bool = False, overwrite: bool = False,
           progress: bool = True, source: dict | None = None) -> int:
    fingerprint = {"n": n, "seed": synth.seed, "height": synth.height, **(source or {})}
    writer = LmdbWriter(out, fingerprint, resume=resume, overwrite=overwrite)
    start = writer.state.get("next", 0)
    chunk = synth.chunk_size
    try:
        with tqdm(total=n, initial=start, unit="word", desc=f"generating {out}", disable=not progress) as bar:
            for i in range(start, n):
                s = synth[i]
                writer.add(encode_png(to_uint8(s.image)), s.text, s.writer, f"synthetic:{i}")
                bar.update(1)
                if (i + 1) % (chunk * 16) == 0:
                    writer.commit({"next": i + 1})
    except BaseException:
        writer.close()  # everything up to the last commit stays; --resume redoes the rest
        raise
    writer.commit({"next": n})
    labels = [label for label, _ in writer.labels()]
    writer.finish({
        "alphabet": Alphabet.from_labels(labels).chars, "image_height": synth.height,
        "counts": {"written": writer.count, "rejected": 0, "writers": writer.count},
        "source": [f"htr-augment generator {synth.generator.info.get('path', '')}"], "options": fingerprint,
        "credit": synth.generator.info.get("data_credit", ""),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool": f"htr-augment {__version__}",
    })
    return writer.count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="htr-generate-lmdb", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lexicon", required=True, help="words: a text file (one per line) or an LMDB (its labels)")
    p.add_argument("-n", type=int, required=True, help="number of words to generate")
    p.add_argument("--out", required=True, help="output LMDB directory")
    p.add_argument("--checkpoint", "-c", help="GAN checkpoint (default: the weights shipped in the package)")
    p.add_argument("--ngram", type=int, default=0,
                   help="instead of lexicon words, sample pseudo-words from a character n-gram model of "
                        "the lexicon (out-of-vocabulary text), of this order")
    p.add_argument("--height", type=int, help="image height (default: the generator's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--resume", action="store_true", help="continue an interrupted export")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("-n must be positive")
    try:
        words = load_lexicon(args.lexicon)
        lexicon = NgramSampler(words, n=args.ngram) if args.ngram else words
        synth = SyntheticWordDataset(args.checkpoint, lexicon, length=args.n, seed=args.seed,
                                     height=args.height, device=args.device)
        n = export(synth, args.n, args.out, resume=args.resume, overwrite=args.overwrite,
                   progress=not args.no_progress,
                   source={"lexicon": str(args.lexicon), "ngram": args.ngram, "checkpoint": str(args.checkpoint)})
    except (CheckpointError, AlphabetError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"htr-generate-lmdb: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nhtr-generate-lmdb: interrupted; rerun with --resume to continue {args.out}", file=sys.stderr)
        return 130
    print(f"wrote {n} generated words to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
