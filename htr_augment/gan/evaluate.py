"""Quality report of a trained generator, measured by an independent recognizer.

    python -m htr_augment.gan.evaluate --evaluator runs/words_eval/best.pt \\
        --real data/words_test.lmdb --train-lexicon data/words_train.lmdb --out reports/gan

The evaluator is a recognizer trained on real words only (not the GAN's own R). For the
same test words, three sources are compared: the real test images, the generator's
words (one style each) and words rendered in handwriting fonts (the naive baseline):
  - text fidelity: the evaluator's CER/WER, split into words seen in the GAN's training
    lexicon (in-vocabulary) and words never seen (out-of-vocabulary);
  - Fréchet distance to real test words in the evaluator's feature space, against the
    distance between two halves of the real test set (the floor for that sample size);
  - diversity: mean pairwise feature distance between renderings of one word (real: by
    different writers; GAN and fonts: different styles);
  - usefulness, with --tstr-steps N: "train on synthetic, test on real" (htr_augment.gan.tstr):
    a fixed small recognizer trained from scratch on one source's words only (the same labels
    and count for each; --train-lexicon must then be an LMDB of real training words), tested
    on the --real words.
Writes report.json, report.md and grid.png (rows: real, GAN, fonts; same words).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_atomic
from ..data import LmdbWordDataset
from ..data.credit import data_credit
from ..fonts import FontRenderer
from ..images import encode_png, to_uint8
from ..lexicon import load_lexicon
from ..metrics import EditCounts
from .data import has_capital
from .quality import at_height, frechet_distance, ink_profile, mean_pairwise_distance, recognize
from .tstr import DEFAULT_SAMPLES, DEFAULT_STEPS, run_tstr
from .word_generator import WordGenerator

SOURCES = ("real", "gan", "fonts")


def fidelity(texts: list[str], preds: list[str], in_vocab: list[bool]) -> dict:
    """CER/WER over all words and subsets: in / out of the GAN's training lexicon, and words with a
    capital letter (a generator that writes capitals as small letters teaches a recognizer wrong labels)."""
    subsets = {"all": lambda t, iv: True, "in_vocabulary": lambda t, iv: iv,
               "out_of_vocabulary": lambda t, iv: not iv,
               "with_capitals": lambda t, iv: has_capital(t)}
    out = {}
    for name, keep in subsets.items():
        c = EditCounts()
        for t, p, iv in zip(texts, preds, in_vocab):
            if keep(t, iv):
                c.add(t, p)
        out[name] = {"cer": c.cer, "wer": c.wer, "words": c.samples}
    return out


def evaluate_generator(gen: WordGenerator, evaluator: str | os.PathLike, real_path: str | os.PathLike,
                       train_words: set[str], *, n: int = 400, styles: int = 5, diversity_words: int = 20,
                       seed: int = 0, device: str = "cpu") -> tuple[dict, np.ndarray]:
    from recognizer.model import load_recognizer
    model, alphabet, config = load_recognizer(evaluator, device)
    height = config["data"]["height"]
    real = LmdbWordDataset(real_path, height=height, alphabet=gen.alphabet)  # words G can write
    rng = random.Random(seed)
    idx = sorted(rng.sample(range(len(real)), min(n, len(real))))
    texts = [real.texts[i] for i in idx]
    in_vocab = [t in train_words for t in texts]
    fonts = FontRenderer(height, seed=seed)
    images = {
        "real": [real[i].image for i in idx],
        "gan": [at_height(im, height) for im in gen.generate(texts, z=gen.sample_z(len(texts), seed))],
        "fonts": [fonts.render(t, style=k) for k, t in enumerate(texts)],
    }
    preds, feats = {}, {}
    for src in SOURCES:
        preds[src], feats[src] = recognize(model, alphabet, images[src], device=device)
    half = len(texts) // 2
    reference = feats["real"][:half]  # FD of the other half of each source against it, same sizes
    report = {
        "evaluator": str(evaluator), "generator": gen.info.get("path"), "generator_step": gen.info.get("step"),
        "style_temperature": gen.style_temperature,
        "real_test": str(real_path), "words": len(texts), "dropped_outside_generator_alphabet": dict(real.dropped),
        "in_vocabulary_words": sum(in_vocab), "out_of_vocabulary_words": len(texts) - sum(in_vocab),
        "fidelity": {src: fidelity(texts, preds[src], in_vocab) for src in SOURCES},
        "frechet_distance": {src: frechet_distance(reference, feats[src][half:]) for src in SOURCES},
        "ink": {src: ink_profile(images[src]) for src in SOURCES},
        "credit": data_credit(real.meta),
    }
    # Diversity: the test words written most often by different writers.
    by_word = defaultdict(list)
    for i, t in enumerate(real.texts):
        by_word[t].append(i)
    common = sorted((w for w, ids in by_word.items() if len(ids) > 1), key=lambda w: (-len(by_word[w]), w))
    common = common[:diversity_words]
    real_groups = [recognize(model, alphabet, [real[i].image for i in by_word[w][:styles]], device=device)[1]
                   for w in common]
    gan_groups, font_groups = [], []
    for k, w in enumerate(common):
        z = gen.sample_z(styles, seed + 1 + k)
        gan_groups.append(recognize(model, alphabet, [at_height(im, height) for im in gen.generate([w] * styles, z=z)],
                                    device=device)[1])
        font_groups.append(recognize(model, alphabet, [fonts.render(w, style=s) for s in range(styles)],
                                     device=device)[1])
    report["diversity"] = {"words": common, "styles": styles, "real": mean_pairwise_distance(real_groups),
                           "gan": mean_pairwise_distance(gan_groups), "fonts": mean_pairwise_distance(font_groups)}
    return report, comparison_grid(images, texts, preds)


def comparison_grid(images: dict, texts: list[str], preds: dict, count: int = 8, margin: int = 6) -> np.ndarray:
    """uint8: one column per word, rows real / gan / fonts."""
    cols = []
    for k in range(min(count, len(texts))):
        tiles = [to_uint8(images[src][k]) for src in SOURCES]
        w = max(t.shape[1] for t in tiles)
        cols.append(np.concatenate([np.pad(t, ((margin, 0), (0, w - t.shape[1] + margin)), constant_values=255)
                                    for t in tiles]))
    return np.concatenate(cols, axis=1) if cols else np.full((8, 8), 255, np.uint8)


def to_markdown(r: dict) -> str:
    f, fd, d, t, ink = r["fidelity"], r["frechet_distance"], r["diversity"], r.get("tstr"), r.get("ink")
    lines = [
        "# Generated handwriting: quality report", "",
        f"Generator `{r['generator']}` (step {r['generator_step']}), evaluated by the independent recognizer "
        f"`{r['evaluator']}` on {r['words']} words of `{r['real_test']}` "
        f"({r['in_vocabulary_words']} in the GAN's training lexicon, {r['out_of_vocabulary_words']} not)."
        + (f" {r['credit']}." if r["credit"] else ""), "",
        "| source | CER | WER | CER in-vocab | CER out-of-vocab | CER with capitals | Fréchet distance | diversity |"
        + (" stroke ink | haze |" if ink else "") + (" TSTR CER | TSTR WER |" if t else ""),
        "| --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- | --- |" if ink else "")
        + (" --- | --- |" if t else ""),
    ]
    names = {"real": "real test words", "gan": "GAN", "fonts": "handwriting fonts"}
    for src in SOURCES:
        a = f[src]
        row = (f"| {names[src]} | {a['all']['cer']:.3f} | {a['all']['wer']:.3f} | "
               f"{a['in_vocabulary']['cer']:.3f} | {a['out_of_vocabulary']['cer']:.3f} | "
               f"{a['with_capitals']['cer']:.3f} ({a['with_capitals']['words']}) | "
               f"{fd[src]:.2f} | {d[src]:.3f} |"
               + (f" {ink[src]['stroke']:.2f} | {ink[src]['haze']:.2f} |" if ink else ""))
        lines.append(row + (f" {t[src]['cer']:.3f} | {t[src]['wer']:.3f} |" if t else ""))
    lines += ["", "Fréchet distance: to one half of the real test words, in the evaluator's feature space; the "
              "real row (the other half) is the floor for this sample size. Diversity: mean pairwise feature "
              f"distance between {d['styles']} renderings of the same word over {len(d['words'])} words "
              "(real: different writers)."
              + (" Stroke ink: mean ink (0-1) of the pixels an Otsu threshold calls ink; haze: the 90th "
                 "percentile of the other pixels' ink (grey around strokes)." if ink else "")
              + (" " + tstr_note(t) if t else ""), ""]
    return "\n".join(lines)


def tstr_note(t: dict) -> str:
    return (f"TSTR (train on synthetic, test on real): `{t['config']}` trained from scratch for "
            f"{t['real']['steps']} steps on {t['real']['samples']} words of that source only (the same labels, "
            f"drawn from `{t['real_train']}`; seed {t['seed']}), greedy CER/WER on the {t['test_words']} words "
            f"of `{t['real_test']}`; the real row is the reference.")


def check_tstr_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fail before the evaluation, not after it."""
    if args.tstr_steps < 0 or args.tstr_samples < 1:
        p.error("--tstr-steps must be >= 0 and --tstr-samples positive")
    if args.tstr_steps and not (Path(args.train_lexicon) / "data.mdb").is_file():
        p.error(f"--tstr-steps trains on real word images: --train-lexicon must be an LMDB of real "
                f"training words, got {args.train_lexicon}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", help="GAN checkpoint (default: the weights shipped in the package)")
    p.add_argument("--evaluator", required=True, help="recognizer checkpoint trained on real words only, or a "
                   "shipped name (copiste-words: the independent word evaluator)")
    p.add_argument("--real", required=True, help="LMDB of real test words")
    p.add_argument("--train-lexicon", required=True, help="the GAN's training words (LMDB or text file)")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("-n", type=int, default=400, help="test words compared (default %(default)s)")
    p.add_argument("--styles", type=int, default=5, help="renderings per word for diversity (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--style-temperature", type=float, metavar="T", help="draw the GAN's prior styles at T times "
                   "the prior's spread (default: the generator's own, 1 unless exported with another)")
    p.add_argument("--device", default="cpu")
    t = p.add_argument_group("train on synthetic, test on real (TSTR)")
    t.add_argument("--tstr-steps", type=int, default=0, metavar="N",
                   help="train configs/recognizer/tstr.toml from scratch for N steps on each source's words "
                        "(real, GAN, fonts) and test it on --real; --train-lexicon must be an LMDB of real "
                        f"training words. 0 skips it (default); the config is sized for {DEFAULT_STEPS} "
                        "(a few minutes per source on 2 CPU cores)")
    t.add_argument("--tstr-samples", type=int, default=DEFAULT_SAMPLES, metavar="N",
                   help="training words per source, the same labels for each (default %(default)s; "
                        "all the real training words if fewer)")
    t.add_argument("--tstr-seed", type=int, default=0, help="seed of the words drawn, styles and training "
                   "(default %(default)s)")
    args = p.parse_args(argv)
    check_tstr_args(p, args)
    torch.set_grad_enabled(False)
    try:
        gen = WordGenerator.load(args.generator, device=args.device)
        gen.style_temperature = gen.resolve_style_temperature(args.style_temperature)
        train_words = set(load_lexicon(args.train_lexicon))
        report, grid = evaluate_generator(gen, args.evaluator, args.real, train_words, n=args.n,
                                          styles=args.styles, seed=args.seed, device=args.device)
        if args.tstr_steps:
            report["tstr"] = run_tstr(gen, args.train_lexicon, args.real, steps=args.tstr_steps,
                                      samples=args.tstr_samples, seed=args.tstr_seed, device=args.device)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"htr_augment.gan.evaluate: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False).encode())
    md = to_markdown(report)
    write_atomic(out / "report.md", (md + "\n![real / GAN / fonts](grid.png)\n").encode())
    write_atomic(out / "grid.png", encode_png(grid))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
