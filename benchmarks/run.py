"""Does mixing synthetic words into every batch make the recognizer better on unseen writers?

    python -m benchmarks.run --synthetic-ratio 0.5                               # the word study, 2 CPU cores
    python -m benchmarks.run --arms baseline,fonts --data data/words             # two arms, word LMDBs
    python -m benchmarks.run --level lines                                       # the line study, synthetic lines
    python -m benchmarks.run --config configs/benchmark/gpu.toml --generator G.pt # the full study

Levels (--level; default: the config's, words for the default configs/benchmark/cpu_words.toml):
  words   the GAN's domain. --data (default ../shared/data/copiste) is built into line LMDBs,
          which the shipped line recognizer (--segmenter, default copiste-lines) cuts into
          words by forced alignment, once: OUT/data/words-HASH/ (keyed by the segmenter's
          SHA-256 and the line LMDBs), reused on rerun. Word LMDBs given as --data are used as they are.
  lines   whole lines, and the synthetic arms mix in whole synthetic *lines* (benchmarks.lines):
          configs/benchmark/cpu_lines.toml when --level lines is given without --config.

Arms (--arms, a comma list; default: the config's `arms`, "baseline,fonts,gan,gan+fonts"):
  baseline    real data only (ratio 0); always run, every other arm is compared with it
  fonts       + words rendered in handwriting fonts (FontWordDataset, the naive baseline);
              lines: FontLineDataset
  gan         + words of the GAN (SyntheticWordDataset; --generator, default the shipped weights);
              lines: SyntheticLineDataset (one style per line)
  gan+fonts   + both, half of the synthetic share each (interleaved: even index GAN, odd index fonts)
--synthetic-source SOURCE is a deprecated alias of --arms baseline,SOURCE (none: --arms baseline).

For each regime (low-resource: K training writers chosen by a seed; full: every training
writer) and seed, the recognizer is trained once per arm with recognizer.train.train; every
synthetic arm puts the same fraction (--synthetic-ratio) of every batch from its source. All
arms share the recognizer config, the number of steps, the seed, the real data and its order
(MixingBatchSampler seeds the real permutation the same way). All are evaluated with
recognizer.evaluate on the test writers, checked to share no writer id with the training and
validation data (the GAN must not have been trained on them either).

The synthetic words are made once per benchmark: `synthetic_pool` words per source and
lexicon, cached in an LMDB under OUT/cache/ (named by a hash of source, generator SHA-256,
lexicon, count, seed and height; built beside and renamed when complete), shared by every
seed and arm and reused on rerun; the report gives its build time apart from the runs'.
The lexicon is --lexicon, else the words of the regime's training labels; each distinct word is
drawn alike (--lexicon-weight type), or as often as it is listed (token: the labels' own word
frequencies, so short words keep their share of the batch). At the line level
the same holds for `synthetic_pool` lines per source drawn from a corpus of line texts:
--corpus (an alias of --lexicon), else the regime's own training lines (the low-resource
writers' texts); their key also holds the layout statistics' SHA-256.

The report (OUT/report.json, report.md, report.html with a grid of each arm's synthetic words)
gives every arm side by side per regime: CER and WER mean ± std over seeds, the relative change
and a paired bootstrap 95% interval of the difference against the baseline and against the
fonts arm (test samples resampled, the same resample for both arms, the difference averaged
over seeds), data sizes, steps and wall time.

Each run lives in OUT/runs/REGIME/ARM/seedN: a finished run (result.json) is skipped on rerun,
an interrupted one resumes from its last.pt. The baseline does not depend on any synthetic
source, so every arm, in this invocation or a later one into the same OUT, shares it.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from htr_augment.alphabet import Alphabet
from htr_augment.atomic import write_atomic
from htr_augment.config import load_config, merge
from htr_augment.data import LmdbWordDataset
from htr_augment.data.credit import data_credit
from htr_augment.gan.word_generator import check_style_temperature
from htr_augment.images import encode_png, to_uint8
from htr_augment.lexicon import LEXICON_WEIGHTS, label_words, load_lexicon, weigh_words
from htr_augment.mixing import MixedDataset, MixingBatchSampler, interleave
from htr_augment.synthetic_cache import WordCache, cached_words
from htr_augment.training import read_metrics_csv, select_device
from htr_augment.training.checkpoint import CheckpointError, file_sha256, load_checkpoint
from recognizer.config import load_recognizer_config, make_config
from recognizer.evaluate import evaluate
from recognizer.model import load_recognizer
from recognizer.pretrained import is_pretrained
from recognizer.report import write_report
from recognizer.train import RUNTIME_KEYS, load_datasets, train

from .common import BenchmarkError, sha256_text, write_json
from .data import Splits, check_unseen, from_legacy_identity, lmdb_identity, resolve_data, select_writers, word_splits
from .lines import GRID_LINES, corpus_lines, line_dataset, line_stats_sha256
from .report import write_reports
from .stats import BOOTSTRAP_METHOD, seed_stats, versus

log = logging.getLogger("benchmarks.run")

REPO = Path(__file__).resolve().parents[1]
LEVELS = ("words", "lines")
DEFAULT_CONFIGS = {"words": REPO / "configs" / "benchmark" / "cpu_words.toml",
                   "lines": REPO / "configs" / "benchmark" / "cpu_lines.toml"}
DEFAULT_CONFIG = DEFAULT_CONFIGS["words"]
DEFAULT_DATA = Path(os.environ.get("HTR_COPISTE", REPO.parent / "shared" / "data" / "copiste"))
# Arms and the synthetic sources each mixes in (gan+fonts: interleaved, half of the synthetic share each).
ARM_SOURCES: dict[str, tuple[str, ...]] = {"baseline": (), "fonts": ("fonts",), "gan": ("gan",),
                                           "gan+fonts": ("gan", "fonts")}
ARMS = tuple(ARM_SOURCES)
SOURCES = ("gan", "fonts", "none")  # of the deprecated --synthetic-source
REGIMES = ("low", "full", "both")
SPLITS = ("test", "val")
RECOGNIZER_TABLES = ("data", "model", "train", "augment")  # benchmark TOML tables merged over the recognizer's
GRID_WORDS = 16  # synthetic words drawn per arm and regime in report.html

# Top-level keys of a benchmark TOML (configs/benchmark/*.toml); the command line overrides them.
DEFAULTS: dict[str, Any] = {
    "recognizer": "../recognizer/tiny.toml",  # recognizer config, relative to the benchmark TOML
    "level": "words",           # words: lines cut into words by `segmenter` first; lines: as they are
    "segmenter": "copiste-lines",  # line recognizer (shipped name or checkpoint) that cuts the words
    "segment_min_score": -1.0,  # lines whose alignment scores lower are left out (recognizer.segment --min-score)
    "reference": "copiste-words",  # a recognizer trained on all writers, tested on the same words ("": none)
    "steps": 600,               # optimizer steps per run, the same for every arm
    "seeds": 1,                 # runs per arm: train.seed, train.seed + 1, ...
    "regime": "both",           # low | full | both
    "writers": 10,              # training writers kept in the low-resource regime ...
    "writer_seed": 0,           # ... drawn with this seed (the same writers for every seed and arm)
    "arms": ",".join(ARMS),     # comma list (or TOML list) of ARMS; the baseline always runs
    "synthetic_ratio": 0.5,     # fraction of each batch that is synthetic in every synthetic arm
    "synthetic_pool": 20000,    # words cached per synthetic source (and lexicon), shared by seeds and arms
    "synthetic_seed": 0,        # seed of the cached words: word i is a function of (seed, i)
    "lexicon_weight": "type",   # words level: type (each distinct word alike) or token (as often as in the lexicon)
    "fonts": "",                # fonts arms: a comma list of installed font file names ("": all of them)
    "style_temperature": None,  # gan arms: prior styles at this multiple of the prior's spread (None: the generator's)
    "legible_by": "",           # a recognizer that must read each synthetic word as its text ("": no filter) ...
    "legible_tries": 4,         # ... styles tried per word before keeping the one it reads best
    "legible_sources": "gan",   # ... the sources it filters: gan, or gan,fonts (the fonts on equal terms)
    "gan_styles": "",           # gan arms: styles of real words ("train": the regime's own; an LMDB path; "": the prior)
    "gan_style_mix": None,      # ... the share of GAN words written in them (None: all of them)
    "evaluate": "best",         # checkpoint tested: best (lowest validation CER) or last
    "split": "test",            # writers tested on: test (the report), or val (choosing settings; see --split)
    "eval_batch_size": 32,
    "bootstrap": 1000,          # resamples of the paired bootstrap
    "device": "auto",
}
RENAMED = {"synthetic_source": 'arms (e.g. arms = "baseline,gan")',
           "synthetic_length": "synthetic_pool (synthetic words cached per source)"}


# -- settings -------------------------------------------------------------------------------

def load_settings(path: str | os.PathLike) -> tuple[dict, dict]:
    """(benchmark settings, recognizer config) of a benchmark TOML: its [data]/[model]/[train]/
    [augment] tables are merged over the recognizer config it names."""
    path = Path(path)
    raw = load_config(path)
    for old, new in RENAMED.items():
        if old in raw:
            raise BenchmarkError(f"{path}: the key '{old}' was replaced by {new}")
    tables = {k: raw.pop(k) for k in RECOGNIZER_TABLES if k in raw}
    settings = merge(DEFAULTS, raw, str(path))
    rec_path = (path.parent / settings["recognizer"]).resolve()
    config = make_config(merge(load_recognizer_config(rec_path), tables, str(path)), str(path))
    settings["recognizer"] = str(rec_path)
    return settings, config


def comma_list(value: str | list[str]) -> list[str]:
    """A flag's comma list, or a TOML list (--arms, --fonts, --legible-sources), as stripped
    non-empty names."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(f).strip() for f in items if str(f).strip()]


def parse_arms(value: str | list[str]) -> list[str]:
    """The arms of a comma list (or a list), in ARMS order, the baseline added if missing."""
    names = comma_list(value)
    unknown = [a for a in names if a not in ARM_SOURCES]
    if unknown or not names:
        what = f"unknown arm {unknown[0]!r}" if unknown else "no arm given"
        raise BenchmarkError(f"--arms: {what}; allowed arms: {', '.join(ARMS)} (a comma list, e.g. "
                             "--arms baseline,fonts,gan)")
    return [a for a in ARMS if a in names or a == "baseline"]


def check_settings(s: dict, config: dict) -> None:
    """Checks `s` and normalises s["arms"] to a list of ARMS."""
    s["arms"] = parse_arms(s["arms"])
    if s["level"] not in LEVELS:
        raise BenchmarkError(f"--level must be one of {', '.join(LEVELS)}, got {s['level']!r}")
    if s["regime"] not in REGIMES:
        raise BenchmarkError(f"--regime must be one of {', '.join(REGIMES)}, got {s['regime']!r}")
    if s["split"] not in SPLITS:
        raise BenchmarkError(f"--split must be one of {', '.join(SPLITS)}, got {s['split']!r}")
    try:
        if s["style_temperature"] is not None:
            s["style_temperature"] = check_style_temperature(s["style_temperature"])
    except (TypeError, ValueError) as e:
        raise BenchmarkError(f"--style-temperature: {e}") from None
    if s["evaluate"] not in ("best", "last"):
        raise BenchmarkError(f"evaluate must be 'best' or 'last', got {s['evaluate']!r}")
    if s["lexicon_weight"] not in LEXICON_WEIGHTS:
        raise BenchmarkError(f"--lexicon-weight must be one of {', '.join(LEXICON_WEIGHTS)}, "
                             f"got {s['lexicon_weight']!r}")
    if s["lexicon_weight"] != "type" and s["level"] != "words":
        raise BenchmarkError("--lexicon-weight weighs the words of a word lexicon; at --level lines the corpus "
                             "lines are drawn as they are listed")
    if s["legible_by"] and s["level"] != "words":
        raise BenchmarkError("--legible-by filters synthetic words; it is not available at --level lines")
    s["legible_sources"] = comma_list(s["legible_sources"])
    if not s["legible_sources"] or set(s["legible_sources"]) - {"gan", "fonts"}:
        raise BenchmarkError(f"--legible-sources: a comma list of gan and fonts, got {','.join(s['legible_sources'])!r}")
    if s["gan_styles"] and s["level"] != "words":
        raise BenchmarkError("--gan-styles styles GAN words; it is not available at --level lines")
    if s["gan_style_mix"] is not None:
        if not s["gan_styles"]:
            raise BenchmarkError("--gan-style-mix needs --gan-styles (the real words whose styles are mixed in)")
        if not 0 < float(s["gan_style_mix"]) <= 1:
            raise BenchmarkError(f"--gan-style-mix is the share of GAN words in real words' styles, in (0, 1]; "
                                 f"got {s['gan_style_mix']}")
    for key in ("steps", "seeds", "writers", "eval_batch_size", "bootstrap", "synthetic_pool", "legible_tries"):
        if int(s[key]) < 1:
            raise BenchmarkError(f"--{key.replace('_', '-')} must be at least 1, got {s[key]}")
    if s["arms"] == ["baseline"]:
        return
    ratio, batch = float(s["synthetic_ratio"]), config["train"]["batch_size"]
    if not 0 < ratio < 1:
        raise BenchmarkError(f"--synthetic-ratio is the synthetic fraction of each batch, in (0, 1); got {ratio} "
                             "(the baseline arm is ratio 0; --arms baseline runs it alone)")
    if not 1 <= round(ratio * batch) < batch:
        raise BenchmarkError(f"--synthetic-ratio {ratio} x batch size {batch} leaves "
                             f"{round(ratio * batch)} synthetic samples per batch; need between 1 and {batch - 1}")


# -- shared state -----------------------------------------------------------------------------

def _canonical(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


@dataclass
class Context:
    """What every run of one benchmark invocation shares."""
    settings: dict
    config: dict
    out: Path
    device: torch.device
    alphabet: Alphabet
    val: LmdbWordDataset | None
    test: LmdbWordDataset
    splits: Splits
    progress: bool
    study: StudyProgress | None = None


class StudyProgress:
    """One bar over every training step of the study (runs finished before count as done), with
    an ETA at the study's average rate so far (test passes and validation included)."""

    def __init__(self, runs: int, steps: int, done: int, enabled: bool):
        self.runs, self.index, self.seen = runs, 0, 0
        self.bar = tqdm(total=runs * steps, initial=done * steps, unit="step", desc="benchmark", smoothing=0,
                        dynamic_ncols=True, disable=not enabled)

    def start(self, what: str) -> None:
        self.index, self.seen = self.index + 1, 0
        self.bar.set_description(f"benchmark, run {self.index}/{self.runs} ({what})")

    def step(self, step: int) -> None:
        self.bar.update(step - self.seen)  # a resumed run's first call covers its earlier steps
        self.seen = step

    def close(self) -> None:
        self.bar.close()


@dataclass
class Regime:
    name: str  # directory name
    kind: str  # low | full
    real: LmdbWordDataset
    writers: list[str] | None  # the low-resource selection


# -- synthetic sources, arms and their cached words ------------------------------------------

@dataclass
class Source:
    """Where a synthetic arm's words (or, at the line level, lines) come from."""
    kind: str  # gan | fonts
    generator: Path | None = None
    sha256: str | None = None
    fonts: list[str] | None = None
    lexicon: str | None = None  # --lexicon/--corpus, else the regime's training labels (their words, or lines)
    lexicon_sha256: str | None = None  # --lexicon's words, by content (the run folder's name carries it)
    lexicon_words: tuple[str, ...] = field(default=(), repr=False)  # --lexicon's words as read, once
    lexicon_weight: str = "type"  # words: type (distinct words alike) or token (as often as listed)
    alphabet: Alphabet | None = None  # the generator's: words it cannot write are left out
    credit: str = ""  # of the data the generator was trained on
    level: str = "words"  # what it writes: words, or whole lines (benchmarks.lines)
    style_temperature: float = 1.0  # gan: prior styles at this multiple of the prior's spread
    font_subset: bool = False  # fonts: `fonts` is a chosen subset of the installed ones (--fonts)
    reader: str | None = None  # the recognizer that must read each word (--legible-by) ...
    reader_sha256: str | None = None
    tries: int = 1  # ... and the styles tried per word
    styles: str = ""  # gan: "train" (the regime's training words), an LMDB of real words, or "" (the z prior) ...
    styles_sha256: str | None = None  # ... an LMDB's labels and writers (for "train": per regime, in pool_key)
    style_mix: float = 1.0  # ... and the share of words written in their styles
    # gan words: further generators (--generator A,B,...), each writing an equal share of the words
    # in its own hand, interleaved (a GAN's styles share one set of letter shapes; fonts bring several).
    also: tuple[Path, ...] = ()
    also_sha256: tuple[str, ...] = ()

    @property
    def lines(self) -> bool:
        return self.level == "lines"

    @property
    def tag(self) -> str:
        tag = f"gan-{self.sha256[:12]}" if self.kind == "gan" else self.kind
        tag += "".join(f"+{sha[:8]}" for sha in self.also_sha256)
        if self.kind == "gan" and self.style_temperature != 1.0:
            tag += f"-T{self.style_temperature:g}"
        if self.reader:
            tag += f"-legible{self.tries}-{self.reader_sha256[:8]}"
        if self.styles:
            tag += f"-styles-{'train' if self.styles == 'train' else self.styles_sha256[:8]}-m{self.style_mix:g}"
        if self.kind == "fonts" and self.font_subset:  # its own run folder; font file names make poor ones
            tag += f"-{sha256_text(','.join(self.fonts))[:8]}"
        if self.lexicon_sha256:
            tag += f"-lex-{self.lexicon_sha256[:8]}"
        if self.lexicon_weight != "type":
            tag += f"-{self.lexicon_weight}s"
        return f"{tag}-lines" if self.lines else tag

    @property
    def texts_of(self) -> str:
        """What it writes from, in words."""
        if self.lexicon:
            return self.lexicon
        return "line texts of the regime's training labels" if self.lines else "words of the regime's training labels"

    def describe(self) -> dict:
        return {"source": self.kind, "generator": str(self.generator) if self.generator else None,
                "generator_sha256": self.sha256, "fonts": self.fonts, "level": self.level,
                "lexicon": self.texts_of,
                **({"lexicon_weight": self.lexicon_weight} if not self.lines else {}),
                **({"style_temperature": self.style_temperature} if self.kind == "gan" else {}),
                **({"also_generators": [str(p) for p in self.also], "also_generators_sha256": list(self.also_sha256)}
                   if self.also else {}),
                **({"legible_by": self.reader, "legible_by_sha256": self.reader_sha256, "legible_tries": self.tries}
                   if self.reader else {}),
                **({"styles": STYLES_TRAIN if self.styles == "train" else self.styles, "style_mix": self.style_mix}
                   if self.styles else {})}

    def dataset(self, words: list[str], length: int, seed: int, height: int, device: str,
                styles: LmdbWordDataset | None = None) -> Dataset:
        """`length` items drawn from `words` (at the line level: lines of text) by (seed, index);
        gan words with `styles`: in the styles of those real words (Source.styles says which)."""
        if self.lines:
            return line_dataset(self.kind, self.generator, words, length, seed, height, device,
                                self.style_temperature, self.font_paths())
        if self.kind == "gan":
            from htr_augment.synthetic import SyntheticWordDataset
            hands = (self.generator, *self.also)
            share = -(-length // len(hands))
            # A path, not the loaded generator: DataLoader workers reload it instead of unpickling weights.
            # Generator k draws from its own seed, so the hands do not write the same words in turn.
            parts = [SyntheticWordDataset(str(g), words, length=share,
                                          seed=seed + k * 1_000_003, height=height, device=device,
                                          style_temperature=self.style_temperature, legible_by=self.reader,
                                          tries=self.tries, styles=styles,
                                          style_mix=self.style_mix if styles is not None else None)
                     for k, g in enumerate(hands)]
            return interleave(*parts, length=length)
        from htr_augment.fonts import FontWordDataset
        return FontWordDataset(words, length=length, seed=seed, height=height, fonts=self.font_paths(),
                               legible_by=self.reader, tries=self.tries)

    def font_paths(self) -> list[Path] | None:
        """The chosen font files (None: every installed one)."""
        if self.kind != "fonts" or not self.font_subset:
            return None
        from htr_augment.fonts import find_fonts
        return [p for p in find_fonts() if p.name in self.fonts]


def read_lexicon(lexicon: str) -> tuple[str, ...]:
    """--lexicon's words, or a BenchmarkError naming the file and the reason."""
    try:
        return tuple(load_lexicon(lexicon))
    except (OSError, ValueError) as e:
        raise BenchmarkError(f"--lexicon {lexicon}: {e}") from None


def make_source(kind: str, generator: str | None, lexicon: str | None,
                alternatives: str = ", or leave the gan arms out (--arms baseline,fonts)", level: str = "words",
                style_temperature: float | None = None, fonts: list[str] | None = None,
                legible_by: str = "", tries: int = 4, styles: str = "", style_mix: float | None = None,
                lexicon_weight: str = "type", lexicon_words: tuple[str, ...] | None = None) -> Source:
    """A synthetic source, checked before any training starts (weights exist and load, fonts are
    installed, the --legible-by recognizer exists, --gan-styles can be used). `lexicon_words`:
    the --lexicon file's words if the caller has read them (read_lexicon), else they are read here."""
    chosen_fonts = [f for f in (fonts or []) if f]
    lex = {"lexicon": lexicon, "lexicon_weight": lexicon_weight, "level": level}
    reader = {}
    if legible_by:
        from htr_augment.gan.quality import Reader
        try:  # the dataset's own check: an unknown name or a missing file, before any training
            weights = Reader(legible_by).path
        except FileNotFoundError as e:
            raise BenchmarkError(f"--legible-by {legible_by}: {e}") from None
        reader = {"reader": legible_by, "reader_sha256": file_sha256(weights), "tries": int(tries)}
    if lexicon:
        words = lexicon_words if lexicon_words is not None else read_lexicon(lexicon)
        lex.update(lexicon_words=words, lexicon_sha256=sha256_text("\n".join(words)))
    if kind == "fonts":
        from htr_augment.fonts import find_fonts
        fonts = find_fonts()
        if not fonts:
            raise BenchmarkError("the fonts arms: no handwriting font installed "
                                 "(pip install fontpkg-caveat fontpkg-kalam fontpkg-indie-flower)")
        if not chosen_fonts:
            return Source("fonts", fonts=[p.name for p in fonts], **lex, **reader)
        names = {p.name for p in fonts}
        unknown = [f for f in chosen_fonts if f not in names]
        if unknown:
            raise BenchmarkError(f"--fonts: {', '.join(unknown)} not installed (installed: {', '.join(sorted(names))})")
        return Source("fonts", fonts=sorted(set(chosen_fonts)), font_subset=True, **lex, **reader)
    if kind != "gan":
        raise BenchmarkError(f"unknown synthetic source {kind!r} (gan or fonts)")
    from htr_augment.gan import word_generator
    path, *also = [Path(g) for g in comma_list(generator or "")] or [word_generator.PACKAGE_WEIGHTS]
    if also and level != "words":
        raise BenchmarkError("--generator: several generators write words only; at --level lines give one")
    if also and styles:
        raise BenchmarkError("--generator: several generators take prior styles only; leave --gan-styles out")
    for p in (path, *also):
        if not p.is_file():
            if generator:
                raise BenchmarkError(f"{p}: no generator checkpoint there (--generator)")
            raise BenchmarkError(f"no generator weights are shipped in the package yet ({p}): pass --generator CKPT "
                                 f"(trained with python -m htr_augment.gan.train){alternatives}")
    gen = word_generator.WordGenerator.load(path)  # CheckpointError naming the file if it is not a GAN checkpoint
    for p in also:
        other = word_generator.WordGenerator.load(p)
        if other.alphabet.chars != gen.alphabet.chars:
            raise BenchmarkError(f"--generator: {p} writes another alphabet than {path}")
    styled = {}
    if styles:
        if not gen.has_style_encoder:
            raise BenchmarkError(f"--gan-styles: {path} has no style encoder (trained before styles from images "
                                 "existed); pass a generator trained with one, or leave --gan-styles out")
        styled = {"styles": styles, "style_mix": 1.0 if style_mix is None else float(style_mix)}
        if styles != "train":
            styled.update(styles=str(Path(styles).resolve()), styles_sha256=styles_identity(styles_dataset(styles)))
    return Source("gan", generator=path.resolve(), sha256=file_sha256(path), **lex,
                  also=tuple(p.resolve() for p in also), also_sha256=tuple(file_sha256(p) for p in also),
                  alphabet=gen.alphabet, credit=gen.info.get("data_credit", "") or "",
                  style_temperature=gen.resolve_style_temperature(style_temperature, lines=level == "lines"),
                  **reader, **styled)


STYLES_TRAIN = "the regime's training words"


def styles_dataset(path: str, height: int | None = None) -> LmdbWordDataset:
    """The real words of --gan-styles PATH (a clear error if it is no usable word LMDB)."""
    if not Path(path, "data.mdb").is_file():
        raise BenchmarkError(f"--gan-styles {path}: no LMDB there (give 'train' or a word LMDB's folder)")
    try:
        ds = LmdbWordDataset(path, height=height)
    except (ValueError, OSError) as e:
        raise BenchmarkError(f"--gan-styles {path}: {e}") from None
    if len(ds) == 0:
        raise BenchmarkError(f"--gan-styles {path}: no usable word image")
    return ds


def styles_identity(ds: LmdbWordDataset) -> str:
    """What the styles' words are, by content (labels and writers in order), not by path."""
    return sha256_text("\n".join(f"{w}\t{t}" for w, t in zip(ds.writers, ds.texts)))


def synthetic_texts(source: Source, real: LmdbWordDataset, alphabet: Alphabet) -> list[str]:
    """What `source` writes: the lexicon (lines: the corpus, see benchmarks.lines), restricted to
    words the recognizer's alphabet (it must learn them) and the generator's can write."""
    if source.lines:
        return corpus_lines(source.lexicon, real.texts, alphabet, source.alphabet, source.kind)
    words = weigh_words(list(source.lexicon_words) if source.lexicon else label_words(real.texts),
                        source.lexicon_weight)
    writable = [alphabet] + ([source.alphabet] if source.alphabet else [])
    usable = [w for w in words if not any(a.missing(w) for a in writable)]
    if len(usable) < len(words):
        log.warning("synthetic lexicon (%s): %d of %d %s have characters outside the recognizer's or the "
                    "generator's alphabet; left out", source.kind, len(words) - len(usable), len(words),
                    "words listed" if source.lexicon_weight == "token" else "distinct words")
    if not usable:
        alphabets = "the recognizer's and the generator's alphabets" if source.alphabet else "the recognizer's alphabet"
        raise BenchmarkError(f"no word of the synthetic lexicon ({source.lexicon or 'training labels'}) can be "
                             f"written with {alphabets} ({source.kind} arms)")
    return usable


@dataclass
class Arm:
    name: str  # one of ARMS
    sources: tuple[Source, ...]  # none for the baseline
    ratio: float  # synthetic fraction of each batch (0 for the baseline)
    pool: int  # cached words per source
    pool_seed: int

    @property
    def dirname(self) -> str:
        """The run folder: a changed source, ratio or pool gets its own; the baseline is one for all."""
        if not self.sources:
            return "baseline"
        seed = f"s{self.pool_seed}" if self.pool_seed else ""
        return f"{'+'.join(s.tag for s in self.sources)}-r{self.ratio:g}-pool{self.pool}{seed}"

    @property
    def label(self) -> str:
        if not self.sources:
            return "real only"
        what = {"fonts": "fonts", "gan": "GAN", "gan+fonts": "GAN + fonts"}[self.name]
        what += " lines" if self.sources[0].lines else ""
        half = ", half from each" if len(self.sources) > 1 else ""
        return f"real + {what} ({self.ratio:.0%} of each batch{half})"


def make_arms(settings: dict, generator: str | None, lexicon: str | None) -> tuple[list[Arm], dict[str, Source]]:
    """The arms of settings["arms"] and the sources they need, each source checked once."""
    kinds = [k for k in ("gan", "fonts") if any(k in ARM_SOURCES[a] for a in settings["arms"])]
    words = read_lexicon(lexicon) if lexicon and kinds else None
    filtered = comma_list(settings["legible_sources"])  # a list after check_settings, a string from a caller
    sources = {k: make_source(k, generator, lexicon, level=settings["level"], lexicon_words=words,
                              style_temperature=settings["style_temperature"],
                              fonts=comma_list(settings["fonts"]),
                              legible_by=settings["legible_by"] if k in filtered else "",
                              tries=int(settings["legible_tries"]), styles=settings["gan_styles"],
                              style_mix=settings["gan_style_mix"],
                              lexicon_weight=settings["lexicon_weight"]) for k in kinds}
    ratio, pool = float(settings["synthetic_ratio"]), int(settings["synthetic_pool"])
    arms = [Arm(a, tuple(sources[k] for k in ARM_SOURCES[a]), ratio if ARM_SOURCES[a] else 0.0, pool,
                int(settings["synthetic_seed"])) for a in settings["arms"]]
    return arms, sources


@dataclass
class Pool:
    """One source's cached words for one regime's lexicon."""
    source: Source
    cache: WordCache
    lexicon_words: int
    dataset: LmdbWordDataset

    def describe(self, out: Path) -> dict:
        return {"source": self.source.kind, "path": _relative(self.cache.path, out), "key": self.cache.key,
                "sha256": self.cache.digest, "words": self.cache.words, "lexicon_words": self.lexicon_words,
                "build_s": self.cache.build_s, "reused": self.cache.reused, "unit": self.source.level}


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def pool_key(source: Source, words: list[str], settings: dict, height: int,
             styles: LmdbWordDataset | None = None) -> dict:
    """What the cached words depend on: the generator by content, not by path; lines also on
    the level and the layout statistics (and a corpus of lines, not a lexicon); styled words on
    their style words (`styles`) by content."""
    texts = {"level": "lines", "corpus_sha256": sha256_text("\n".join(words)),
             "line_stats_sha256": line_stats_sha256()} if source.lines \
        else {"lexicon_sha256": sha256_text("\n".join(words))}
    # The style temperature only when it is not 1: caches made before it existed stay valid.
    temperature = {"style_temperature": source.style_temperature} if source.style_temperature != 1.0 else {}
    legible = {"legible_by_sha256": source.reader_sha256, "legible_tries": source.tries} if source.reader else {}
    styled = {"styles_sha256": styles_identity(styles), "style_mix": source.style_mix} if styles is not None else {}
    also = {"also_generators_sha256": list(source.also_sha256)} if source.also else {}
    return {"source": source.kind, "generator_sha256": source.sha256, "fonts": source.fonts, **texts,
            "count": int(settings["synthetic_pool"]), "seed": int(settings["synthetic_seed"]), "height": height,
            **temperature, **legible, **styled, **also}


def cache_source_words(source: Source, words: list[str], settings: dict, height: int, cache_dir: Path,
                       device: torch.device, num_workers: int, progress: bool = True,
                       styles: LmdbWordDataset | None = None) -> WordCache:
    """`settings["synthetic_pool"]` words of `source` from `words` (gan words in the styles of
    `styles`' real words, if given), cached once under `cache_dir` (named by pool_key), reused by
    every seed, arm, rerun and benchmarks.synthetic_speed."""
    key = pool_key(source, words, settings, height, styles)
    # A GAN on a GPU generates fastest in this process; on a CPU, in the training's DataLoader workers.
    on_gpu = source.kind == "gan" and device.type == "cuda"
    gen_device = str(device) if on_gpu else "cpu"
    return cached_words(lambda: source.dataset(words, key["count"], key["seed"], height, gen_device, styles), key,
                        cache_dir, prefix=f"{source.kind}-lines" if source.lines else source.kind,
                        num_workers=0 if on_gpu else num_workers, progress=progress, unit=source.level,
                        description=f"benchmarks.run synthetic {source.level}: {source.describe()}",
                        credit=source.credit)


def build_pool(ctx: Context, regime: Regime, source: Source) -> Pool:
    """The regime's cached words of `source`: built once under OUT/cache, reused by every seed, arm and rerun."""
    height = ctx.config["data"]["height"]
    words = synthetic_texts(source, regime.real, ctx.alphabet)
    styles = None
    if source.styles:  # the regime's own training words (e.g. the low-resource writers'), or an LMDB's
        styles = regime.real if source.styles == "train" else styles_dataset(source.styles, height)
    cache = cache_source_words(source, words, ctx.settings, height, ctx.out / "cache", ctx.device,
                               ctx.config["train"]["num_workers"], ctx.progress, styles)
    return Pool(source, cache, len(words), LmdbWordDataset(cache.path, height=height, alphabet=ctx.alphabet))


def arm_dataset(arm: Arm, pools: dict[str, Pool]) -> Dataset:
    """What the arm mixes in: nothing, one source's cached words, or two interleaved (even index: the first)."""
    parts = [pools[s.kind].dataset for s in arm.sources]
    return interleave(*parts) if parts else []


def write_grid(dataset: Dataset, path: Path, lines: bool = False) -> Path:
    """A PNG of the first synthetic words (4 a row) or lines (one a row) an arm mixes in, with their labels."""
    from recognizer.segment import render_grid
    count, columns = (GRID_LINES, 1) if lines else (GRID_WORDS, 4)
    items = [(to_uint8(s.image), s.text) for s in (dataset[i] for i in range(min(count, len(dataset))))]
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, encode_png(render_grid(items, columns=columns)))


# -- one run --------------------------------------------------------------------------------

def run_fingerprint(ctx: Context, regime: Regime, arm: Arm, pools: dict[str, Pool], config: dict) -> dict:
    """What a run's result depends on; a finished run with another fingerprint is never reused.
    The baseline's has no synthetic part, so every arm (and every earlier invocation) shares it."""
    return _canonical({
        "recognizer": {sec: {k: v for k, v in tab.items() if not (sec == "train" and k in RUNTIME_KEYS)}
                       for sec, tab in config.items()},
        "train_data": lmdb_identity(ctx.splits.train), "writers": regime.writers,
        "val_data": lmdb_identity(ctx.splits.val), "test_data": lmdb_identity(ctx.splits.test),
        "evaluate": ctx.settings["evaluate"], "alphabet": ctx.alphabet.chars,
        # The cached words by their key (generator by content, lexicon by hash), not by path.
        "synthetic": None if not arm.sources else {
            "arm": arm.name, "ratio": arm.ratio, "pools": [pools[s.kind].cache.key for s in arm.sources]},
    })


def _finished_run(run_dir: Path, fingerprint: dict) -> dict | None:
    """The record of a finished run (None if there is none); refuses a folder of other settings."""
    done = run_dir / "result.json"
    if done.is_file():
        record = json.loads(done.read_text(encoding="utf-8"))
        if record["fingerprint"] != fingerprint and _from_legacy(record["fingerprint"]) == fingerprint:
            record["fingerprint"] = fingerprint  # keyed by the LMDBs' paths before 2026-11-26: the same run
            write_json(done, record)
            log.info("%s: fingerprint moved to LMDB identities without paths", run_dir)
        if record["fingerprint"] != fingerprint:
            raise BenchmarkError(f"{run_dir} holds a run with other settings (data, config or synthetic source); "
                                 "remove it or choose another --out")
        log.info("%s: finished before, skipped", run_dir)
        return {**record, "dir": str(run_dir), "skipped": True}
    started = run_dir / "run.json"
    if started.is_file() and _from_legacy(json.loads(started.read_text(encoding="utf-8"))) != fingerprint:
        raise BenchmarkError(f"{run_dir} holds an unfinished run with other settings; "
                             "remove it or choose another --out")
    write_json(started, fingerprint)
    return None


def _from_legacy(fingerprint: dict) -> dict:
    """A run fingerprint with its LMDBs identified as lmdb_identity does now."""
    return {k: from_legacy_identity(v) if k.endswith("_data") else v for k, v in fingerprint.items()}


def run_path(ctx: Context, regime: Regime, arm: Arm, seed: int) -> Path:
    return ctx.out / "runs" / regime.name / arm.dirname / f"seed{seed}"


def validation_curve(run_dir: Path) -> list[list[float]]:
    """[[step, validation CER], ...] of a run, from its metrics.csv (empty without validation data)."""
    path = run_dir / "metrics.csv"
    return [[step, cer] for step, cer in read_metrics_csv(path).get("val/cer", [])] if path.is_file() else []


def run_one(ctx: Context, regime: Regime, arm: Arm, seed: int, pools: dict[str, Pool]) -> dict:
    """Train (or resume, or skip) and test one arm at one seed; returns its result.json record."""
    s = ctx.settings
    run_dir = run_path(ctx, regime, arm, seed)
    if ctx.study:
        ctx.study.start(f"{regime.kind}, {arm.name}, seed {seed}")
    config = copy.deepcopy(ctx.config)
    config["train"].update(seed=seed, max_steps=int(s["steps"]))
    fingerprint = run_fingerprint(ctx, regime, arm, pools, config)
    finished = _finished_run(run_dir, fingerprint)
    if finished is not None:
        return finished

    tc = config["train"]
    # The baseline: the same sampler at ratio 0, so the real order matches the other arms.
    mixed = MixedDataset(regime.real, arm_dataset(arm, pools))
    sampler = MixingBatchSampler(mixed, tc["batch_size"], arm.ratio, seed=seed)
    log.info("%s: training %s, %d steps", run_dir, arm.label, tc["max_steps"])
    study = ctx.study
    timing_path = run_dir / "timing.json"
    timing = json.loads(timing_path.read_text(encoding="utf-8")) if timing_path.is_file() \
        else {"train_s": 0.0, "sessions": 0}
    t0 = time.perf_counter()
    try:
        result = train(config, mixed, ctx.val, run_dir, alphabet=ctx.alphabet, device=ctx.device, resume=True,
                       batch_sampler=sampler, progress=ctx.progress and study is None,
                       on_step=study.step if study else None)
    finally:  # an interrupted session's time counts too
        timing = {"train_s": timing["train_s"] + time.perf_counter() - t0, "sessions": timing["sessions"] + 1}
        write_json(timing_path, timing)
    if result.interrupted or result.step < tc["max_steps"]:  # stopped early: checkpointed, resumed on rerun
        raise KeyboardInterrupt
    ckpt = result.best_checkpoint if s["evaluate"] == "best" and result.best_checkpoint else result.last_checkpoint
    t1 = time.perf_counter()
    model, alphabet, _ = load_recognizer(ckpt, ctx.device)
    ev = evaluate(model, alphabet, ctx.test, batch_size=int(s["eval_batch_size"]), device=ctx.device,
                  bootstrap=int(s["bootstrap"]), checkpoint=str(ckpt), progress=ctx.progress and study is None)
    write_report(ev, run_dir / "test")  # the full per-run report; test/samples.csv has every sample
    record = {
        "fingerprint": fingerprint, "regime": regime.kind, "arm": arm.name, "arm_dir": arm.dirname, "seed": seed,
        "dir": str(run_dir), "steps": result.step, "checkpoint": str(ckpt), "train_wall_s": timing["train_s"],
        "train_sessions": timing["sessions"], "eval_wall_s": time.perf_counter() - t1,
        "real_train_samples": len(regime.real), "test_samples": len(ev.samples),
        "cer": ev.cer, "wer": ev.wer, "val_curve": validation_curve(run_dir),
        "references_sha256": sha256_text("\n".join(x.reference for x in ev.samples)),
        "per_sample": {"char_errors": [x.char_errors for x in ev.samples], "chars": [x.length for x in ev.samples],
                       "word_errors": [x.word_errors for x in ev.samples], "words": [x.words for x in ev.samples]},
    }
    write_json(run_dir / "result.json", record)  # last: its presence marks the run finished
    log.info("%s: test CER %.4f, WER %.4f", run_dir, ev.cer, ev.wer)
    return {**record, "skipped": False}


# -- aggregation ----------------------------------------------------------------------------
#
# report.json (rates are fractions; *_diff_mean = the arm minus the arm compared with, averaged over seeds):
#   protocol   {level, arms, recognizer_config, steps, batch_size, seeds, evaluated_checkpoint, device, metric,
#               bootstrap}
#   data       {origin, train, val, test: {path, samples, writers}, credit}
#   segmentation  null (lines, or word LMDBs given) or {segmented, segmenter, segmenter_file, key, dir, reused,
#               seconds, splits: {SPLIT: {lines, lines_kept, words, seconds}}}
#   reference  null or {name, file, sha256, test, cer, wer, cer_ci95, wer_ci95, samples, steps, ...} (or {name, error})
#   wall_s     {study, data, runs, note}: this invocation's wall time
#   synthetic  {ratio, pool, pool_seed, unit (words | lines), lexicon, lexicon_weight, generator, generator_sha256,
#               sources: {gan|fonts: {...}}}
#   (at the line level, the *words counts below count the cached lines, and lexicon_words the corpus lines)
#   cache      {dir, caches, built_this_run, build_s_this_run, build_s_all}
#   regimes[REGIME] = {kind, dir, writer_ids, real_train_samples, real_train_writers, lexicon_words: {SOURCE: n},
#       pools: {SOURCE: {source, path, key, sha256, words, lexicon_words, build_s, reused, unit}},
#       grids: {ARM: PNG path relative to OUT},
#       arms[ARM] = {label, ratio, sources, dir, cer: {mean, std, per_seed: {SEED: rate}}, wer: {...},
#           vs_baseline, vs_fonts: null or {against, cer_diff_mean, ci95 (of the CER difference),
#               cer_relative_change, cer_reference, wer_diff_mean, wer_ci95, wer_relative_change,
#               wer_reference, seeds_paired},
#           steps, wall_s (mean per run, training + test), wall_s_total, synthetic_per_batch,
#           synthetic_words (distinct cached words it mixes in),
#           runs: [{seed, dir, ..., skipped, val_curve: [[step, validation CER], ...]}]}}

def summarize_arm(arm: Arm, records: list[dict], pools: dict[str, Pool], batch_size: int) -> dict:
    walls = [r["train_wall_s"] + r["eval_wall_s"] for r in records]
    steps = sorted({r["steps"] for r in records})
    return {"label": arm.label, "ratio": arm.ratio, "sources": [s.kind for s in arm.sources],
            "dir": arm.dirname, "cer": seed_stats(records, "cer"), "wer": seed_stats(records, "wer"),
            "vs_baseline": None, "vs_fonts": None,
            "steps": steps[0] if len(steps) == 1 else steps, "wall_s": statistics.fmean(walls),
            "wall_s_total": sum(walls), "synthetic_per_batch": round(arm.ratio * batch_size),
            "synthetic_words": len(arm_dataset(arm, pools)),
            "runs": [{**{k: r[k] for k in ("seed", "dir", "steps", "checkpoint", "train_wall_s", "eval_wall_s",
                                           "train_sessions", "cer", "wer", "skipped")},
                      "val_curve": r.get("val_curve", [])} for r in records]}


def summarize_regime(arms: list[Arm], records: dict[str, list[dict]], pools: dict[str, Pool], batch_size: int,
                     resamples: int) -> dict[str, dict]:
    """Every arm's summary, with its paired comparison against the baseline and the fonts arm."""
    out = {}
    for arm in arms:
        entry = out[arm.name] = summarize_arm(arm, records[arm.name], pools, batch_size)
        for ref in ("baseline", "fonts"):
            if arm.sources and arm.name != ref and ref in records:
                entry[f"vs_{ref}"] = versus(ref, records[ref], records[arm.name], resamples)
    return out


def _dataset_info(ds: LmdbWordDataset | None) -> dict | None:
    if ds is None:
        return None
    return {"path": ds.path, "samples": len(ds), "writers": len(set(ds.writers) - {""})}


# -- the benchmark ------------------------------------------------------------------------------

def make_regimes(ctx: Context, full: LmdbWordDataset) -> list[Regime]:
    s, d = ctx.settings, ctx.config["data"]
    regimes: list[Regime] = []
    if s["regime"] in ("low", "both"):
        chosen = select_writers(full.writers, int(s["writers"]), int(s["writer_seed"]))
        real = LmdbWordDataset(ctx.splits.train, height=d["height"], alphabet=ctx.alphabet,
                               min_length=d["min_length"], max_length=d["max_length"] or None, writers=chosen)
        regimes.append(Regime(f"low-{len(chosen)}w-seed{s['writer_seed']}", "low", real, chosen))
    if s["regime"] in ("full", "both"):
        regimes.append(Regime("full", "full", full, None))
    return regimes


def prepare_pools(ctx: Context, regime: Regime, arms: list[Arm], sources: dict[str, Source]
                  ) -> tuple[dict[str, Pool], dict[str, str]]:
    """The regime's cached words per source, and a grid image of each synthetic arm's words
    (OUT/samples/REGIME/ARM-FOLDER.png, paths relative to OUT: named like the arm's run folder, so
    a later invocation with another source does not overwrite the grid an earlier report shows)."""
    pools = {kind: build_pool(ctx, regime, source) for kind, source in sources.items()}
    grids = {}
    for arm in arms:
        if arm.sources:
            png = ctx.out / "samples" / regime.name / f"{arm.dirname}.png"
            grids[arm.name] = _relative(write_grid(arm_dataset(arm, pools), png, arm.sources[0].lines), ctx.out)
    return pools, grids


def run_regime(ctx: Context, regime: Regime, arms: list[Arm], seeds: list[int], pools: dict[str, Pool],
               grids: dict[str, str]) -> dict:
    """Every arm at every seed (arms interleaved: an interruption leaves paired results behind)."""
    records: dict[str, list[dict]] = {arm.name: [] for arm in arms}
    for seed in seeds:
        for arm in arms:
            records[arm.name].append(run_one(ctx, regime, arm, seed, pools))
    return {"kind": regime.kind, "dir": str(ctx.out / "runs" / regime.name), "writer_ids": regime.writers,
            "real_train_samples": len(regime.real), "real_train_writers": len(set(regime.real.writers) - {""}),
            "lexicon_words": {kind: pool.lexicon_words for kind, pool in pools.items()},
            "pools": {kind: pool.describe(ctx.out) for kind, pool in pools.items()}, "grids": grids,
            "arms": summarize_regime(arms, records, pools, ctx.config["train"]["batch_size"],
                                     int(ctx.settings["bootstrap"]))}


def cache_summary(out: Path, all_pools: list[dict[str, Pool]]) -> dict:
    """Build time of the cached words, apart from the runs' (a cache shared by regimes counted once)."""
    unique = {p.cache.digest: p.cache for pools in all_pools for p in pools.values()}
    built = [c for c in unique.values() if not c.reused]
    return {"dir": _relative(out / "cache", out), "caches": len(unique), "built_this_run": len(built),
            "build_s_this_run": sum(c.build_s for c in built), "build_s_all": sum(c.build_s for c in unique.values())}


def describe_synthetic(settings: dict, sources: dict[str, Source], lexicon: str | None) -> dict:
    gan, level = sources.get("gan"), settings["level"]
    return {"ratio": float(settings["synthetic_ratio"]), "pool": int(settings["synthetic_pool"]),
            "pool_seed": int(settings["synthetic_seed"]), "unit": level,
            "lexicon": lexicon or f"{'line texts' if level == 'lines' else 'words'} of each regime's training labels",
            "lexicon_weight": settings["lexicon_weight"],
            "generator": str(gan.generator) if gan else None, "generator_sha256": gan.sha256 if gan else None,
            "style_temperature": gan.style_temperature if gan else None,
            "sources": {kind: src.describe() for kind, src in sources.items()}}


def reference_result(ctx: Context, name: str) -> dict | None:
    """A recognizer trained on every training writer (e.g. copiste-words), tested on the study's
    test words: what the low-resource arms are short of. Cached in OUT/reference-HASH.json."""
    from recognizer.pretrained import resolve
    try:
        weights = resolve(name)
    except CheckpointError as e:
        log.warning("reference recognizer left out: %s", e)
        return {"name": name, "error": str(e)}
    key = {"sha256": file_sha256(weights), "test": lmdb_identity(ctx.splits.test),
           "bootstrap": int(ctx.settings["bootstrap"])}
    path = ctx.out / f"reference-{sha256_text(json.dumps(key, sort_keys=True))[:16]}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    model, alphabet, config = load_recognizer(weights, ctx.device)
    test = LmdbWordDataset(ctx.splits.test, height=config["data"]["height"])
    ev = evaluate(model, alphabet, test, batch_size=int(ctx.settings["eval_batch_size"]), device=ctx.device,
                  bootstrap=int(ctx.settings["bootstrap"]))
    ckpt = load_checkpoint(weights, kind="recognizer")
    result = {"name": name, "file": str(weights), **key, "cer": ev.cer, "wer": ev.wer, "cer_ci95": list(ev.ci["cer"]),
              "wer_ci95": list(ev.ci["wer"]), "samples": len(ev.samples), "steps": ckpt["step"],
              "training_samples_note": "every training writer" if is_pretrained(name) else "see its checkpoint"}
    write_json(path, result)
    return result


def run_benchmark(args: argparse.Namespace, argv: list[str]) -> dict:
    started = time.perf_counter()
    settings, config = _settings_from_args(args)
    out = out_dir(args)
    arms, sources = make_arms(settings, args.generator, args.lexicon)
    progress = not args.no_progress
    device = select_device(settings["device"])
    splits = resolve_data(args.data or DEFAULT_DATA, out / "data", progress)
    segmentation = None
    if settings["level"] == "words":
        splits, segmentation = word_splits(splits, args.segmenter or settings["segmenter"], out / "data", device,
                                           settings["segment_min_score"], progress)
    if settings["split"] == "val":  # the validation writers become the test set and pick no checkpoint
        if splits.val is None:
            raise BenchmarkError(f"--split val: {splits.origin} has no validation split")
        splits = Splits(f"{splits.origin}, tested on its validation writers", splits.train, None, splits.val)
    data_s = time.perf_counter() - started
    full, val, alphabet = load_datasets(config, [str(splits.train)], str(splits.val) if splits.val else None)
    test = LmdbWordDataset(splits.test, height=config["data"]["height"])  # every label: unwritable ones count
    if len(test) == 0 or len(full) == 0:
        raise BenchmarkError(f"{splits.test if len(test) == 0 else splits.train}: no usable sample")
    check_unseen(test, [full, val])
    ctx = Context(settings, config, out, device, alphabet, val, test, splits, progress)
    regimes = make_regimes(ctx, full)
    prepared = [prepare_pools(ctx, regime, arms, sources) for regime in regimes]  # every cache before any run
    seeds = [config["train"]["seed"] + i for i in range(int(settings["seeds"]))]
    reference_name = settings["reference"] if settings["level"] == "words" else ""
    reference = reference_result(ctx, reference_name) if reference_name else None
    plan = [run_path(ctx, regime, arm, seed) for regime in regimes for seed in seeds for arm in arms]
    ctx.study = StudyProgress(len(plan), int(settings["steps"]), sum((p / "result.json").is_file() for p in plan),
                              progress)
    runs_started = time.perf_counter()
    try:
        report_regimes = {regime.kind: run_regime(ctx, regime, arms, seeds, pools, grids)
                          for regime, (pools, grids) in zip(regimes, prepared)}
    finally:
        ctx.study.close()
    runs_s = time.perf_counter() - runs_started

    credit = data_credit(full.meta) or data_credit(test.meta)
    return {
        "title": "Synthetic-data benchmark",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.run", *argv]),
        "config": str(config_path(args).resolve()),
        "protocol": {"level": settings["level"], "arms": [arm.name for arm in arms], "tested_on": settings["split"],
                     "recognizer_config": settings["recognizer"],
                     "steps": int(settings["steps"]), "batch_size": config["train"]["batch_size"], "seeds": seeds,
                     "evaluated_checkpoint": "lowest validation CER" if settings["evaluate"] == "best" and val
                     else "last", "device": str(device),
                     "metric": "corpus CER / WER of htr_augment.metrics (exact, after Unicode NFC), greedy "
                               "decoding; std over seeds (sample std); relative change = difference / the "
                               "mean of the arm compared with",
                     "bootstrap": {"method": BOOTSTRAP_METHOD, "level": 0.95,
                                   "resamples": int(settings["bootstrap"]), "seed": 0}},
        "data": {"origin": splits.origin, "train": _dataset_info(full), "val": _dataset_info(val),
                 "test": _dataset_info(test), "credit": credit},
        "synthetic": describe_synthetic(settings, sources, args.lexicon),
        "cache": cache_summary(out, [pools for pools, _ in prepared]),
        "segmentation": segmentation,
        "reference": reference,
        "wall_s": {"study": time.perf_counter() - started, "data": data_s, "runs": runs_s,
                   "note": "this invocation only: runs finished before and caches reused cost nothing here"},
        "regimes": report_regimes,
    }


# -- command line -----------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="benchmark TOML: configs/benchmark/cpu_words.toml (default: the word study "
                   "on 2 CPU cores, within 45 minutes), cpu_lines.toml (the default with --level lines: the line study "
                   "within an hour) or gpu.toml (the full study). Flags below override it")
    p.add_argument("--level", choices=LEVELS, help="words: cut the lines into words with --segmenter first "
                   "(default); lines: train and test on whole lines")
    p.add_argument("--segmenter", metavar="NAME|CKPT", help="line recognizer that cuts the words (default: the "
                   "config's, copiste-lines, shipped in the package)")
    p.add_argument("--reference", metavar="NAME|CKPT", help="recognizer trained on all writers, tested on the same "
                   "words for comparison (default: the config's, copiste-words; '' for none)")
    p.add_argument("--arms", metavar="ARM,...", help=f"arms to run side by side, a comma list of {', '.join(ARMS)} "
                   "(config default: all four; the baseline always runs)")
    p.add_argument("--synthetic-source", choices=SOURCES,
                   help="deprecated alias: --synthetic-source S is --arms baseline,S (none: --arms baseline)")
    p.add_argument("--synthetic-ratio", type=float, metavar="R", help="synthetic fraction of each batch in every "
                   "synthetic arm, in (0, 1) (config default 0.5)")
    p.add_argument("--synthetic-pool", type=int, metavar="N", help="synthetic words (lines at --level lines) "
                   "cached per source under OUT/cache, shared by every seed and arm (config default 20000)")
    p.add_argument("--generator", metavar="CKPT[,CKPT...]", help="GAN checkpoint of the gan arms (default: the "
                   "weights shipped in the package); several, comma-separated: each writes an equal share of the "
                   "GAN words in its own hand, interleaved (words level)")
    p.add_argument("--style-temperature", type=float, metavar="T", help="gan arms: prior styles at T times the "
                   "spread of the generator's fitted style prior (default: the generator's own, 1 unless its weights "
                   "were exported with another; > 1 for more varied hands)")
    p.add_argument("--fonts", metavar="FILE,...", help="fonts arms: only these installed font files, by name "
                   "(e.g. 'Caveat[wght].ttf'; default: every installed handwriting font)")
    p.add_argument("--legible-by", metavar="NAME|CKPT", help="gan arms (and fonts, with --legible-sources gan,fonts): "
                   "a recognizer (e.g. copiste-words) that must read each synthetic word as its text; a word it "
                   "misreads is written again in another style, up to --legible-tries styles, keeping the one read "
                   "best (default: no filter)")
    p.add_argument("--legible-sources", metavar="gan[,fonts]", help="with --legible-by: the synthetic sources it "
                   "filters (default gan; gan,fonts compares the fonts on equal terms)")
    p.add_argument("--legible-tries", type=int, metavar="N", help="with --legible-by: styles tried per word "
                   "(default 4)")
    p.add_argument("--gan-styles", metavar="train|LMDB", help="gan arms: write the GAN words in the styles of real "
                   "words (the generator's style encoder): 'train' = the regime's own training words (in the "
                   "low-resource regime, its writers' hands), or a word LMDB's folder (default: styles drawn from "
                   "the generator's prior)")
    p.add_argument("--gan-style-mix", type=float, metavar="P", help="with --gan-styles: the share of GAN words "
                   "written in real words' styles, in (0, 1]; the others take prior styles (default 1)")
    p.add_argument("--split", choices=SPLITS, help="writers every arm is tested on: test (default; the report) or "
                   "val, to choose a generator or a setting without touching the test writers (the validation "
                   "writers are then not used to pick a checkpoint: each run's last one is tested)")
    p.add_argument("--lexicon", "--corpus", dest="lexicon", metavar="FILE", help="what the synthetic sources write: "
                   "words (--level words) or lines of text (--level lines), a text file (one per line) or an LMDB "
                   "(its labels); default: the words, or the line texts, of the regime's training labels")
    p.add_argument("--lexicon-weight", choices=LEXICON_WEIGHTS, help="words level: how often the synthetic "
                   "sources write each word of the lexicon: type = each distinct word alike (default), token = as "
                   "often as it is listed (the training labels' own word frequencies, so short words such as "
                   "'de' or 'à' keep their share of the batch)")
    p.add_argument("--seeds", type=int, metavar="N", help="runs per arm, seeds train.seed .. train.seed + N - 1")
    p.add_argument("--steps", type=int, help="optimizer steps per run (every arm)")
    p.add_argument("--regime", choices=REGIMES, help="low: K training writers; full: all of them; both")
    p.add_argument("--writers", type=int, metavar="K", help="training writers kept in the low-resource regime")
    p.add_argument("--writer-seed", type=int, help="seed of the low-resource writer draw")
    p.add_argument("--data", metavar="DIR", help="a folder of train.lmdb, test.lmdb [, val.lmdb] (e.g. word LMDBs "
                   f"from recognizer.segment), or a TSV dataset with a split column (default {DEFAULT_DATA}; its "
                   "LMDBs are built once into OUT/data)")
    p.add_argument("--out", help="benchmark folder (default runs/benchmark/<config name>): runs/, data/, cache/, "
                   "samples/, report.json, report.md, report.html")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the config's; auto = cuda if available)")
    p.add_argument("--num-workers", type=int, help="DataLoader workers per run (overrides train.num_workers)")
    p.add_argument("--bootstrap", type=int, help="resamples of the paired bootstrap")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def _arms_from_args(args: argparse.Namespace) -> str | None:
    """--arms, or the deprecated --synthetic-source mapped onto it."""
    if args.synthetic_source is None:
        return args.arms
    if args.arms is not None:
        raise BenchmarkError("give --arms or the deprecated --synthetic-source, not both")
    arms = "baseline" if args.synthetic_source == "none" else f"baseline,{args.synthetic_source}"
    log.warning("--synthetic-source %s is deprecated: it means --arms %s", args.synthetic_source, arms)
    return arms


def _settings_from_args(args: argparse.Namespace) -> tuple[dict, dict]:
    settings, config = load_settings(config_path(args))
    overrides = {"arms": _arms_from_args(args)}
    overrides.update({key: getattr(args, key) for key in ("level", "reference", "synthetic_ratio", "synthetic_pool",
                                                          "style_temperature", "fonts", "split", "seeds", "steps",
                                                          "legible_by", "legible_tries", "legible_sources",
                                                          "gan_styles",
                                                          "gan_style_mix", "lexicon_weight",
                                                          "regime", "writers", "writer_seed", "device", "bootstrap")})
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if args.num_workers is not None:
        config["train"]["num_workers"] = args.num_workers
    check_settings(settings, config)
    return settings, config


def config_path(args: argparse.Namespace) -> Path:
    """--config, else the default of --level (words unless given)."""
    return Path(args.config) if args.config else DEFAULT_CONFIGS[args.level or "words"]


def out_dir(args: argparse.Namespace) -> Path:
    # Validation-split runs apart: their baseline is tested on other writers.
    return Path(args.out or Path("runs") / "benchmark" / (config_path(args).stem + ("-val" if args.split == "val" else "")))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    out = out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True,
                        handlers=[logging.StreamHandler(sys.stderr),
                                  logging.FileHandler(out / "benchmark.log", encoding="utf-8")])
    try:
        rep = run_benchmark(args, argv)
    except (OSError, ValueError) as e:  # BenchmarkError, ConfigError, CheckpointError, InputError, missing files
        print(f"benchmarks.run: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbenchmarks.run: interrupted; rerun the same command to continue (finished runs and cached words "
              "are kept, the current run or cache resumes where it stopped)", file=sys.stderr)
        return 130
    paths = write_reports(out, rep)
    print(paths["md"].read_text(encoding="utf-8"))
    print(f"wrote {paths['json']}, {paths['md']} and {paths['html']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
