"""Evaluate a recognizer on a labelled dataset and write a report.

    python -m recognizer.evaluate --checkpoint runs/x/best.pt --data test.lmdb --report reports/x
    python -m recognizer.evaluate ... --beam 10 --lexicon words.txt

Corpus-level CER / WER come from htr_augment.metrics (the project's one definition), under
every normalisation it defines; around them: substitution / deletion / insertion counts,
the most frequent confusions, a breakdown by label length, percentile-bootstrap 95%
intervals (samples resampled, corpus ratio recomputed) and the worst samples with their
images. From Python: `evaluate(model, alphabet, dataset) -> EvalResult`, then
`recognizer.report.write_report(result, out_dir)`.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from htr_augment.alphabet import Alphabet, normalize_text
from htr_augment.data.credit import data_credit
from htr_augment.images import encode_png, pad_batch, to_uint8
from htr_augment.metrics import NORMALISATIONS, EditCounts, edit_operations

from .beam_search import Lexicon, ctc_decode, describe_decoder
from .report import write_report

LENGTH_EDGES = (1, 6, 11, 21, 41, 81)  # label-length bins [1, 5], [6, 10], ..., [81, inf)


@dataclass
class SampleResult:
    index: int  # position in the dataset
    writer: str
    reference: str
    hypothesis: str
    char_errors: int
    length: int  # reference characters
    word_errors: int
    words: int  # reference words


@dataclass
class EvalResult:
    samples: list[SampleResult]
    counts: dict[str, EditCounts]  # normalisation name -> corpus sums
    operations: dict[str, int]  # substitutions / deletions / insertions (characters, exact)
    confusions: list[tuple[str, str, int]]  # (reference char, hypothesis char, count); "" = nothing
    by_length: list[dict]
    ci: dict  # bootstrap intervals of the exact CER and WER
    decoder: str
    data: dict = field(default_factory=dict)  # path, meta, credit, outside_alphabet
    checkpoint: str | None = None
    worst: list[int] = field(default_factory=list)  # indices into `samples`, worst first
    worst_images: dict[int, bytes] = field(default_factory=dict)  # sample index -> PNG

    @property
    def cer(self) -> float:
        return self.counts["exact"].cer

    @property
    def wer(self) -> float:
        return self.counts["exact"].wer


def bootstrap_ci(errors: Sequence[int], totals: Sequence[int], resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of sum(errors) / sum(totals), resampling samples with replacement."""
    errors, totals = np.asarray(errors, np.int64), np.asarray(totals, np.int64)
    n = len(errors)
    if n == 0 or resamples < 1:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    ratios = []
    rows = max(1, 2_000_000 // n)  # bounded memory for large test sets
    for start in range(0, resamples, rows):
        idx = rng.integers(0, n, size=(min(rows, resamples - start), n))
        ratios.append(errors[idx].sum(1) / np.maximum(1, totals[idx].sum(1)))
    lo, hi = np.percentile(np.concatenate(ratios), [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def length_bins(samples: Sequence[SampleResult], edges: Sequence[int] = LENGTH_EDGES) -> list[dict]:
    """CER / WER per reference-length bin (empty bins left out)."""
    out = []
    bounds = list(edges) + [None]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        inside = [s for s in samples if s.length >= lo and (hi is None or s.length < hi)]
        if not inside:
            continue
        c = EditCounts(sum(s.char_errors for s in inside), sum(s.length for s in inside),
                       sum(s.word_errors for s in inside), sum(s.words for s in inside), len(inside))
        out.append({"bin": f"{lo}+" if hi is None else f"{lo}-{hi - 1}", "samples": c.samples, "chars": c.char_total,
                    "cer": c.cer, "wer": c.wer})
    return out


class _Collate:
    """Pad images only: labels are not encoded, so references the model cannot write still count."""

    def __init__(self, multiple: int):
        self.multiple = multiple

    def __call__(self, samples):
        images, widths = pad_batch([s.image for s in samples], self.multiple)
        return images, widths, [s.text for s in samples], [s.writer for s in samples]


@torch.inference_mode()
def predict(model: torch.nn.Module, alphabet: Alphabet, dataset: Dataset, *, batch_size: int = 16,
            device: str | torch.device = "cpu", beam_width: int = 0, lexicon: Lexicon | None = None,
            num_workers: int = 0, progress: bool = False) -> list[tuple[str, str, str]]:
    """(reference, hypothesis, writer) for every sample, in dataset order."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_Collate(getattr(model, "stride", 1)))
    out = []
    for images, widths, texts, writers in tqdm(loader, desc="evaluating", unit="batch", disable=not progress,
                                               dynamic_ncols=True):
        o = model(images.to(device), widths.to(device))
        hyps = ctc_decode(o.log_probs.float().cpu(), o.lengths.cpu(), alphabet, beam_width, lexicon)
        out += zip(texts, hyps, writers)
    return out


def score(predictions: Sequence[tuple[str, str, str]], *, bootstrap: int = 1000, seed: int = 0,
          top_confusions: int = 20, length_edges: Sequence[int] = LENGTH_EDGES) -> dict:
    """Everything the report shows that follows from (reference, hypothesis, writer) triples."""
    samples: list[SampleResult] = []
    counts = {name: EditCounts() for name in NORMALISATIONS}
    ops: Counter = Counter()
    confusions: Counter = Counter()
    for i, (ref, hyp, writer) in enumerate(predictions):
        ref, hyp = normalize_text(ref), normalize_text(hyp)
        for name, norm in NORMALISATIONS.items():
            counts[name].add(norm(ref), norm(hyp))
        one = EditCounts()
        one.add(ref, hyp)
        samples.append(SampleResult(i, writer, ref, hyp, one.char_errors, one.char_total, one.word_errors,
                                    one.word_total))
        for op, r, h in edit_operations(ref, hyp):
            ops[op] += 1
            confusions[(r or "", h or "")] += 1
    ci = {"method": "percentile bootstrap over samples", "level": 0.95, "resamples": bootstrap, "seed": seed,
          "cer": bootstrap_ci([s.char_errors for s in samples], [s.length for s in samples], bootstrap, seed),
          "wer": bootstrap_ci([s.word_errors for s in samples], [s.words for s in samples], bootstrap, seed)}
    top = sorted(confusions.items(), key=lambda kv: (-kv[1], kv[0]))[:top_confusions]
    return {"samples": samples, "counts": counts, "ci": ci, "by_length": length_bins(samples, length_edges),
            "operations": {"substitutions": ops["S"], "deletions": ops["D"], "insertions": ops["I"]},
            "confusions": [(r, h, n) for (r, h), n in top]}


def evaluate(model: torch.nn.Module, alphabet: Alphabet, dataset: Dataset, *, batch_size: int = 16,
             device: str | torch.device = "cpu", beam_width: int = 0, lexicon: Lexicon | None = None,
             bootstrap: int = 1000, seed: int = 0, worst: int = 24, num_workers: int = 0,
             checkpoint: str | None = None, progress: bool = False) -> EvalResult:
    """Run `model` over `dataset` (WordSamples) and score it; see write_report for the files."""
    predictions = predict(model, alphabet, dataset, batch_size=batch_size, device=device, beam_width=beam_width,
                          lexicon=lexicon, num_workers=num_workers, progress=progress)
    result = EvalResult(decoder=describe_decoder(beam_width, lexicon), checkpoint=checkpoint,
                        **score(predictions, bootstrap=bootstrap, seed=seed))
    meta = getattr(dataset, "meta", None) or {}
    result.data = {"path": getattr(dataset, "path", None), "samples": len(result.samples),
                   "source": meta.get("source"), "credit": data_credit(meta),
                   "outside_alphabet": sum(bool(alphabet.missing(s.reference)) for s in result.samples)}
    wrong = [s for s in result.samples if s.char_errors]
    wrong.sort(key=lambda s: (-s.char_errors, -s.char_errors / max(1, s.length), s.index))
    result.worst = [s.index for s in wrong[:worst]]
    result.worst_images = {i: encode_png(to_uint8(dataset[i].image)) for i in result.worst}
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m recognizer.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="recognizer checkpoint (.pt) or a shipped name: "
                   "copiste-lines, copiste-words (python -m recognizer.pretrained list)")
    p.add_argument("--data", required=True, help="labelled LMDB to evaluate on")
    p.add_argument("--report", required=True, metavar="DIR",
                   help="folder for report.json, report.md, report.html and samples.csv")
    p.add_argument("--beam", type=int, default=0, metavar="N",
                   help="prefix beam search of width N (default 0: greedy best-path decoding)")
    p.add_argument("--lexicon", metavar="FILE", help="word list (whitespace-separated); needs --beam")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples for the 95%% intervals (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--worst", type=int, default=24, help="worst samples shown with their images")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.lexicon and args.beam < 1:
        p.error("--lexicon constrains beam search: give --beam N (e.g. --beam 10)")
    if args.batch_size < 1 or args.beam < 0 or args.worst < 0 or args.bootstrap < 0:
        p.error("--batch-size must be positive; --beam, --worst and --bootstrap not negative")
    return args


def load_model(path: str, device: str):
    """(model, alphabet, config) of a checkpoint; a seam so tests can substitute a fake model."""
    from .model import load_recognizer
    return load_recognizer(path, device)


def main(argv: Sequence[str] | None = None) -> int:
    from htr_augment.data import LmdbWordDataset

    args = parse_args(argv)
    try:
        model, alphabet, config = load_model(args.checkpoint, args.device)
        height = (config or {}).get("data", {}).get("height")
        # The LMDB's own alphabet: references the model cannot write are scored, not dropped.
        dataset = LmdbWordDataset(args.data, height=height)
        lexicon = Lexicon.load(args.lexicon, alphabet) if args.lexicon else None
        if len(dataset) == 0:
            raise ValueError(f"{args.data}: no samples to evaluate")
        result = evaluate(model, alphabet, dataset, batch_size=args.batch_size, device=args.device,
                          beam_width=args.beam, lexicon=lexicon, bootstrap=args.bootstrap, seed=args.seed,
                          worst=args.worst, num_workers=args.workers, checkpoint=args.checkpoint,
                          progress=not args.no_progress)
        paths = write_report(result, args.report)
    except (OSError, ValueError) as e:  # CheckpointError, AlphabetError, missing files ...
        print(f"recognizer.evaluate: error: {e}", file=sys.stderr)
        return 2
    if lexicon is not None and lexicon.skipped:
        print(f"lexicon: {len(lexicon.skipped)} words with characters outside the alphabet were left out",
              file=sys.stderr)
    lo, hi = result.ci["cer"]
    print(f"{len(result.samples)} samples, {result.decoder}: CER {result.cer:.2%} [{lo:.2%}, {hi:.2%}], "
          f"WER {result.wer:.2%}  ->  {paths['html']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
