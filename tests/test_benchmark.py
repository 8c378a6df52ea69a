"""benchmarks.run end to end on a tiny fixture (drawn words, fake writers, an untrained
generator, 3 training steps, 40 cached synthetic words per source), the word cache, and
FontWordDataset."""
import csv
import hashlib
import json
import pickle
import random
from pathlib import Path

import editdistance
import numpy as np
import pytest
import torch

import benchmarks.run
from benchmarks import synthetic_speed
from benchmarks.data import resolve_data, select_writers
from benchmarks.run import REPO, check_settings, load_settings, main, parse_args
from benchmarks.stats import compare
from htr_augment import synthetic_cache
from htr_augment.data import LmdbWordDataset
from htr_augment.data.build_lmdb import BuildOptions, build
from htr_augment.data.lmdb_format import partial_path
from htr_augment.data.sources import read_gt
from htr_augment.fonts import FontWordDataset
from htr_augment.gan import word_generator
from htr_augment.mixing import InterleavedDataset
from htr_augment.synthetic_cache import cached_words
from htr_augment.training import load_checkpoint

from .conftest import write_gt
from .fixtures_gan import tiny_generator_checkpoint

TRAIN_WRITERS = [f"train{i}" for i in range(5)]


def words(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    return ["".join(rnd.choice("abcdefghij") for _ in range(rnd.randint(2, 5))) for _ in range(n)]


def write_split(root, split: str, writers: list[str], per_writer: int, seed: int):
    """root/SPLIT.lmdb: `per_writer` drawn words by each of `writers`."""
    items = []
    for k, writer in enumerate(writers):
        for item in read_gt(write_gt(root / "images" / writer, words(per_writer, seed + k), height=32)):
            item.writer = writer
            items.append(item)
    build(items, root / f"{split}.lmdb", BuildOptions(), progress=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A folder of prepared LMDBs, as recognizer.segment would leave them."""
    root = tmp_path_factory.mktemp("bench")
    write_split(root, "train", TRAIN_WRITERS, 6, 0)
    write_split(root, "val", ["val0"], 6, 100)
    write_split(root, "test", ["test0", "test1"], 5, 200)
    return root


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    return tiny_generator_checkpoint(tmp_path_factory.mktemp("gen") / "g.pt")


def args(data, out, *extra):
    return ["--data", str(data), "--out", str(out), "--regime", "both", "--reference", "", "--steps", "3",
            "--seeds", "1", "--writers", "2",
            "--num-workers", "0", "--bootstrap", "200", "--device", "cpu", "--no-progress", "--synthetic-pool", "40",
            *extra]


class DatasetCalls:
    """Counts how often a source's generating dataset is made: only when a cache is built."""

    def __init__(self, monkeypatch):
        self.kinds = []
        make = benchmarks.run.Source.dataset

        def counted(source, *a, **kw):
            self.kinds.append(source.kind)
            return make(source, *a, **kw)
        monkeypatch.setattr(benchmarks.run.Source, "dataset", counted)


@pytest.fixture(scope="module")
def gan_run(data, generator, tmp_path_factory):
    """Every arm (the config's default: baseline, fonts, gan, gan+fonts) in one run."""
    out = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as mp:
        calls = DatasetCalls(mp)
        assert main(args(data, out, "--generator", str(generator))) == 0
    assert sorted(calls.kinds) == ["fonts", "fonts", "gan", "gan"]  # one cache per source and regime lexicon
    return out


def report(out) -> dict:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def rates(samples_csv) -> tuple[float, float]:
    """CER and WER recomputed from a run's per-sample rows (recognizer.report's samples.csv)."""
    with open(samples_csv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    total = lambda key: sum(int(r[key]) for r in rows)  # noqa: E731
    return total("char_errors") / total("length"), total("word_errors") / total("words")


def check_versus(v: dict, against: str, arm: dict, reference: dict) -> None:
    """A vs_* entry: the paired difference of the two arms' per-sample results."""
    assert v["against"] == against and v["seeds_paired"] == len(arm["runs"])
    for metric, ci in (("cer", "ci95"), ("wer", "wer_ci95")):
        diff = arm[metric]["mean"] - reference[metric]["mean"]
        assert v[f"{metric}_diff_mean"] == pytest.approx(diff, abs=1e-12)
        if reference[metric]["mean"]:
            assert v[f"{metric}_relative_change"] == pytest.approx(diff / reference[metric]["mean"], abs=1e-12)
        lo, hi = v[ci]
        assert lo - 1e-12 <= diff <= hi + 1e-12


def test_every_arm_side_by_side_in_one_report(gan_run, generator):
    rep = report(gan_run)
    md = (gan_run / "report.md").read_text(encoding="utf-8")
    page = (gan_run / "report.html").read_text(encoding="utf-8")
    assert set(rep["regimes"]) == {"low", "full"} and rep["protocol"]["arms"] == ["baseline", "fonts", "gan",
                                                                                 "gan+fonts"]
    assert rep["synthetic"]["generator_sha256"] == hashlib.sha256(generator.read_bytes()).hexdigest()
    assert rep["synthetic"]["generator_sha256"] in md
    assert rep["data"]["test"] == {"path": str(rep["data"]["test"]["path"]), "samples": 10, "writers": 2}
    for regime in rep["regimes"].values():
        arms = regime["arms"]
        assert list(arms) == ["baseline", "fonts", "gan", "gan+fonts"]
        for name, arm in arms.items():
            (run,) = arm["runs"]
            assert run["steps"] == arm["steps"] == 3 and run["train_wall_s"] > 0 and arm["wall_s"] > 0
            cer, wer = rates(f"{run['dir']}/test/samples.csv")
            assert arm["cer"]["mean"] == pytest.approx(cer, abs=1e-12)
            assert arm["wer"]["mean"] == pytest.approx(wer, abs=1e-12)
            assert arm["cer"]["std"] is None and arm["cer"]["per_seed"] == {"1": arm["cer"]["mean"]}  # one seed
            assert arm["label"] in md and arm["label"] in page
        assert arms["baseline"]["vs_baseline"] is None and arms["baseline"]["vs_fonts"] is None
        assert arms["fonts"]["vs_fonts"] is None
        for name in ("fonts", "gan", "gan+fonts"):
            check_versus(arms[name]["vs_baseline"], "baseline", arms[name], arms["baseline"])
        for name in ("gan", "gan+fonts"):
            check_versus(arms[name]["vs_fonts"], "fonts", arms[name], arms["fonts"])
        assert [arms[a]["synthetic_words"] for a in arms] == [0, 40, 40, 80]
        assert [arms[a]["synthetic_per_batch"] for a in arms] == [0, 8, 8, 8]
        assert set(regime["grids"]) == {"fonts", "gan", "gan+fonts"}
        assert all((gan_run / png).is_file() for png in regime["grids"].values())
        # Named like each arm's run folder: another source's grid never overwrites this report's.
        for name, png in regime["grids"].items():
            assert Path(png).stem == Path(regime["arms"][name]["runs"][0]["dir"]).parent.name
        assert set(regime["pools"]) == {"gan", "fonts"}
        assert all(p["words"] == 40 and p["build_s"] > 0 and not p["reused"] for p in regime["pools"].values())
    assert page.count("data:image/png;base64,") == 6  # a grid per synthetic arm and regime
    assert rep["cache"]["built_this_run"] == 4 and rep["cache"]["build_s_this_run"] > 0
    assert rep["regimes"]["full"]["real_train_samples"] == 30
    assert rep["regimes"]["full"]["real_train_writers"] == 5
    assert "CER vs real only" in md and "CER vs fonts" in md and "Data:" in md


def test_gan_plus_fonts_interleaves_the_two_caches(gan_run, data):
    low = report(gan_run)["regimes"]["low"]
    gan, fonts = (LmdbWordDataset(gan_run / low["pools"][k]["path"]) for k in ("gan", "fonts"))
    assert all(w.startswith("synthetic:") for w in gan.writers) and all(w.startswith("font:") for w in fonts.writers)
    mixed = InterleavedDataset(gan, fonts)
    assert len(mixed) == 80
    for i in (0, 1, 2, 79):
        part = gan if i % 2 == 0 else fonts
        assert mixed[i].writer == part.writers[i // 2] and torch.equal(mixed[i].image, part[i // 2].image)
    with pytest.raises(IndexError):
        mixed[80]


def test_low_resource_regime_uses_exactly_k_writers(gan_run, data):
    low = report(gan_run)["regimes"]["low"]
    assert len(low["writer_ids"]) == low["real_train_writers"] == 2
    assert set(low["writer_ids"]) <= set(TRAIN_WRITERS) and low["real_train_samples"] == 12
    assert low["writer_ids"] == select_writers(LmdbWordDataset(data / "train.lmdb").writers, 2, 0)
    assert select_writers(TRAIN_WRITERS * 3, 3, 1) == select_writers(list(reversed(TRAIN_WRITERS)), 3, 1)
    with pytest.raises(ValueError, match="only 5 writers"):
        select_writers(TRAIN_WRITERS, 6, 0)


def test_rerun_skips_finished_runs_and_reuses_the_cache(gan_run, data, generator, monkeypatch):
    checkpoints = sorted(gan_run.glob("runs/*/*/seed*/last.pt"))
    caches = sorted(gan_run.glob("cache/*.lmdb/data.mdb"))
    assert len(checkpoints) == 8 and len(caches) == 4
    mtimes = [p.stat().st_mtime_ns for p in checkpoints + caches]
    calls = DatasetCalls(monkeypatch)
    assert main(args(data, gan_run, "--generator", str(generator))) == 0
    rep = report(gan_run)
    assert all(r["skipped"] for reg in rep["regimes"].values() for a in reg["arms"].values() for r in a["runs"])
    assert [p.stat().st_mtime_ns for p in checkpoints + caches] == mtimes
    assert calls.kinds == [] and rep["cache"]["built_this_run"] == 0 and rep["cache"]["build_s_all"] > 0
    assert all(p["reused"] for reg in rep["regimes"].values() for p in reg["pools"].values())


def test_a_moved_benchmark_keeps_its_runs_and_path_keyed_runs_migrate(data, tmp_path, capsys):
    import shutil
    first_data, first_out = tmp_path / "data", tmp_path / "out"
    shutil.copytree(data, first_data)
    assert main(args(first_data, first_out, "--arms", "baseline", "--regime", "low")) == 0
    moved_data, out = tmp_path / "elsewhere" / "data", tmp_path / "elsewhere" / "out"
    shutil.move(first_data, moved_data)
    shutil.move(first_out, out)
    result = next(out.glob("runs/*/baseline/seed1/result.json"))
    checkpoint = result.parent / "last.pt"
    mtime = checkpoint.stat().st_mtime_ns
    record = json.loads(result.read_text(encoding="utf-8"))
    new = dict(record["fingerprint"])
    # As a run finished before the LMDBs were keyed by content recorded them: by absolute path.
    record["fingerprint"].update({k: {"path": str(first_data / v["name"]), "created": v["created"]}
                                  for k, v in new.items() if k.endswith("_data")})
    result.write_text(json.dumps(record), encoding="utf-8")
    assert main(args(moved_data, out, "--arms", "baseline", "--regime", "low")) == 0
    assert all(r["skipped"] for r in report(out)["regimes"]["low"]["arms"]["baseline"]["runs"])
    assert checkpoint.stat().st_mtime_ns == mtime
    assert json.loads(result.read_text(encoding="utf-8"))["fingerprint"] == new  # migrated
    record = json.loads(result.read_text(encoding="utf-8"))
    record["fingerprint"]["train_data"]["created"] = "another build"
    result.write_text(json.dumps(record), encoding="utf-8")
    assert main(args(moved_data, out, "--arms", "baseline", "--regime", "low")) == 2
    assert "other settings" in capsys.readouterr().err


def test_synthetic_source_is_an_alias_of_two_arms(gan_run, data, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert "deprecated alias" in capsys.readouterr().out
    assert main(args(data, gan_run, "--synthetic-source", "fonts", "--regime", "low", "--seeds", "2")) == 0
    rep = report(gan_run)
    low = rep["regimes"]["low"]
    assert rep["protocol"]["arms"] == ["baseline", "fonts"] and list(low["arms"]) == ["baseline", "fonts"]
    assert set(rep["regimes"]) == {"low"} and set(rep["synthetic"]["sources"]) == {"fonts"}
    assert "fonts" in low["arms"]["fonts"]["label"] and low["pools"]["fonts"]["reused"]
    for arm in low["arms"].values():  # seed 1 of both arms reused from the four-arm run
        assert [r["skipped"] for r in arm["runs"]] == [True, False]
    for arm in low["arms"].values():  # mean and std over seeds, from the per-sample rows
        cers = [rates(f"{r['dir']}/test/samples.csv")[0] for r in arm["runs"]]
        assert arm["cer"]["mean"] == pytest.approx(np.mean(cers), abs=1e-12)
        assert arm["cer"]["std"] == pytest.approx(np.std(cers, ddof=1), abs=1e-12)
        assert list(arm["cer"]["per_seed"].values()) == pytest.approx(cers, abs=1e-12)
    check_versus(low["arms"]["fonts"]["vs_baseline"], "baseline", low["arms"]["fonts"], low["arms"]["baseline"])
    # Two seeds: the interval over training seeds, in report.json and as a column of report.md.
    v = low["arms"]["fonts"]["vs_baseline"]
    diffs = [low["arms"]["fonts"]["cer"]["per_seed"][k] - low["arms"]["baseline"]["cer"]["per_seed"][k]
             for k in ("1", "2")]
    assert v["cer_per_seed_difference"] == pytest.approx(diffs, abs=1e-12)
    lo, hi = v["cer_seed_ci95"]
    assert lo < v["cer_diff_mean"] < hi or lo == hi
    md = (gan_run / "report.md").read_text(encoding="utf-8")
    assert "CER vs real only, over seeds [95% t]" in md and f"[{100 * lo:+.2f}, {100 * hi:+.2f}]" in md


def test_an_interrupted_run_resumes(data, tmp_path, monkeypatch):
    real_train = benchmarks.run.train
    monkeypatch.setattr(benchmarks.run, "train", lambda *a, **kw: real_train(*a, **kw, stop_after=1))  # as if Ctrl-C
    cmd = args(data, tmp_path, "--arms", "baseline", "--regime", "low")
    assert main(cmd) == 130
    (run,) = tmp_path.glob("runs/*/baseline/seed1")
    assert load_checkpoint(run / "last.pt")["step"] == 1 and not (run / "result.json").exists()
    monkeypatch.setattr(benchmarks.run, "train", real_train)
    assert main(cmd) == 0
    record = json.loads((run / "result.json").read_text(encoding="utf-8"))
    assert record["steps"] == 3 and record["train_sessions"] == 2
    assert load_checkpoint(run / "last.pt")["step"] == 3


def test_an_interrupted_cache_build_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic_cache, "COMMIT_EVERY", 4)
    lexicon = ["maison", "chat", "porte"]
    read = []

    class Recorded(FontWordDataset):
        fail_at = 9

        def __getitems__(self, indices):  # what a DataLoader batch calls (and __getitem__ too)
            if self.fail_at in indices:
                raise KeyboardInterrupt  # as if Ctrl-C
            read.extend(indices)
            return super().__getitems__(indices)

    key = {"source": "fonts", "count": 14, "seed": 0, "height": 32}
    with pytest.raises(KeyboardInterrupt):
        cached_words(lambda: Recorded(lexicon, length=14, height=32), key, tmp_path, prefix="fonts", progress=False)
    path = synthetic_cache.cache_path(tmp_path, "fonts", key)
    assert partial_path(path).is_dir() and not path.exists()
    Recorded.fail_at, read[:] = None, []
    cache = cached_words(lambda: Recorded(lexicon, length=14, height=32), key, tmp_path, prefix="fonts",
                         progress=False)
    assert read == list(range(8, 14))  # resumed after the last commit (every 4 words)
    assert cache.words == 14 and not cache.reused and not partial_path(path).exists()
    made = []
    whole = FontWordDataset(lexicon, length=14, height=32)
    cached = LmdbWordDataset(cache.path, height=32)
    assert cached.texts == [whole[i].text for i in range(14)]
    assert cached.writers == [whole[i].writer for i in range(14)]  # nothing lost or duplicated by the resume
    again = cached_words(lambda: made.append(2), key, tmp_path, prefix="fonts", progress=False)
    assert again.reused and made == [] and again.path == cache.path
    assert synthetic_cache.cache_path(tmp_path, "fonts", {**key, "count": 15}) != path  # another key, another cache


def test_clear_errors(data, generator, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(word_generator, "PACKAGE_WEIGHTS", tmp_path / "not-shipped.pt")
    assert main(args(data, tmp_path / "a")) == 2  # the default arms include the GAN
    err = capsys.readouterr().err
    assert "--generator" in err and "not-shipped.pt" in err
    assert main(args(data, tmp_path / "a", "--generator", str(tmp_path / "missing.pt"))) == 2
    assert "missing.pt" in capsys.readouterr().err
    for ratio in ("1.5", "0"):
        assert main(args(data, tmp_path / "a", "--generator", str(generator), "--synthetic-ratio", ratio)) == 2
        assert "--synthetic-ratio" in capsys.readouterr().err
    assert main(args(data, tmp_path / "a", "--arms", "baseline", "--writers", "9")) == 2
    assert "only 5 writers" in capsys.readouterr().err
    assert main(args(data, tmp_path / "a", "--arms", "baseline,gans")) == 2
    err = capsys.readouterr().err
    assert "'gans'" in err and "allowed arms: baseline, fonts, gan, gan+fonts" in err
    assert main(args(data, tmp_path / "a", "--arms", "fonts", "--synthetic-source", "gan")) == 2
    assert "not both" in capsys.readouterr().err
    old = tmp_path / "old.toml"
    old.write_text(f'recognizer = "{REPO / "configs" / "recognizer" / "tiny.toml"}"\nsynthetic_source = "gan"\n',
                   encoding="utf-8")
    assert main(args(data, tmp_path / "a", "--config", str(old))) == 2
    assert "'synthetic_source' was replaced by arms" in capsys.readouterr().err
    assert not (tmp_path / "a" / "runs").exists() and not (tmp_path / "a" / "cache").exists()  # checked first


def test_a_changed_setting_does_not_reuse_a_run(gan_run, data, capsys):
    assert main(args(data, gan_run, "--arms", "baseline", "--regime", "low", "--steps", "4")) == 2
    assert "other settings" in capsys.readouterr().err


def test_paired_bootstrap_resamples_both_arms_and_every_seed_together():
    rnd = random.Random(0)
    n, chars = 40, [rnd.randint(1, 8) for _ in range(40)]

    def record(seed, better):
        errors = [max(0, rnd.randint(0, c) - better) for c in chars]
        words = [int(e > 0) for e in errors]
        return {"seed": seed, "dir": f"seed{seed}", "references_sha256": "same", "cer": sum(errors) / sum(chars),
                "wer": sum(words) / n, "per_sample": {"char_errors": errors, "chars": chars, "word_errors": words,
                                                      "words": [1] * n}}

    base, syn = [record(1, 0), record(2, 0)], [record(1, 1), record(2, 1)]
    out = compare(base, syn, resamples=300, seed=3)
    # Independently: one resample of test samples (drawn as recognizer.evaluate.bootstrap_ci
    # draws them) applied to both arms of every seed, CER differences averaged over seeds.
    idx = np.random.default_rng(3).integers(0, n, size=(300, n))
    c = np.asarray(chars)
    diffs = np.mean([(np.asarray(s["per_sample"]["char_errors"])[idx].sum(1)
                      - np.asarray(b["per_sample"]["char_errors"])[idx].sum(1)) / c[idx].sum(1)
                     for b, s in zip(base, syn)], axis=0)
    assert out["cer"]["ci95"] == pytest.approx(list(np.percentile(diffs, [2.5, 97.5])), abs=1e-12)
    mean_diff = np.mean([s["cer"] - b["cer"] for b, s in zip(base, syn)])
    assert out["cer"]["difference"] == pytest.approx(mean_diff, abs=1e-12) and out["cer"]["ci95"][1] < 0
    # Over training seeds: a t interval of the per-seed differences (2 seeds: t = 12.706).
    per_seed = [s["cer"] - b["cer"] for b, s in zip(base, syn)]
    half = 12.706 * np.std(per_seed, ddof=1) / np.sqrt(2)
    assert out["cer"]["per_seed_difference"] == pytest.approx(per_seed)
    assert out["cer"]["seed_ci95"] == pytest.approx([mean_diff - half, mean_diff + half])
    assert compare(base[:1], syn[:1], resamples=10)["cer"]["seed_ci95"] is None
    syn[1]["references_sha256"] = "other"
    with pytest.raises(ValueError, match="same samples"):
        compare(base, syn, resamples=10)


def test_compare_cli_pairs_the_seeds_two_arm_folders_share(tmp_path, capsys):
    from benchmarks import compare as compare_cli
    chars = [3, 5, 2, 6]

    def write(arm, seed, errors, hyps=None):
        words = [int(e > 0) for e in errors]
        run = tmp_path / arm / f"seed{seed}"
        run.mkdir(parents=True)
        if hyps:  # the run's per-sample report, which --by-class reads
            (run / "test").mkdir()
            rows = "".join(f"{i},{r},{h},{editdistance.eval(r, h)},{len(r)}\n"
                           for i, (r, h) in enumerate(zip(["Le", "A9"], hyps)))
            (run / "test" / "samples.csv").write_text("index,reference,hypothesis,char_errors,length\n" + rows,
                                                      encoding="utf-8")
        (run / "result.json").write_text(json.dumps({
            "seed": seed, "dir": str(run), "references_sha256": "same", "cer": sum(errors) / sum(chars),
            "wer": sum(words) / len(chars), "per_sample": {"char_errors": errors, "chars": chars,
                                                           "word_errors": words, "words": [1] * len(chars)}}))
    write("a", 1, [2, 3, 1, 4], ["le", "A9"]), write("a", 2, [1, 3, 2, 4], ["Le", "49"]), write("a", 3, [0, 0, 0, 0])
    write("b", 1, [1, 2, 1, 2], ["Le", "A9"]), write("b", 2, [1, 1, 1, 3], ["Le", "A"])  # seed 3 only in a: left out
    c = compare_cli.compare_arms(tmp_path / "a", tmp_path / "b", resamples=200)
    assert c["seeds"] == [1, 2]
    assert c["cer"]["per_seed_difference"] == pytest.approx([-4 / 16, -4 / 16])
    assert c["cer"]["difference"] == pytest.approx(-0.25) and c["cer"]["ci95"][1] < 0
    assert compare_cli.main([str(tmp_path / "a"), str(tmp_path / "b"), "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "seeds paired: [2]" in out and "CER: 37.50% vs 62.50%, difference -25.00 pts" in out
    assert compare_cli.main([str(tmp_path / "a"), str(tmp_path / "b"), "--seeds", "3"]) == 2
    assert "no finished seed in common" in capsys.readouterr().err
    # By class over seeds 1-2: capitals L, A, L, A (a misses L once, A once); the digit 9 twice
    # (a misses none; b deletes it once); lowercase e twice, never missed.
    classes = compare_cli.breakdown(c, "class")
    assert classes["capital"] == {"chars_per_seed": 2, "first": 0.5, "second": 0.0}
    assert classes["digit"] == {"chars_per_seed": 1, "first": 0.0, "second": 0.5}
    assert classes["lowercase"]["first"] == 0.0 and classes["accented"]["first"] is None
    assert compare_cli.main([str(tmp_path / "a"), str(tmp_path / "b"), "--by-class"]) == 0
    assert "capital           2  50.00%   0.00% -50.00 pts" in capsys.readouterr().out
    # By length: both words have 2 characters, 8 over seeds 1-2; a misses 2 of them (le, 49),
    # b 1 (A). Other bins hold no word.
    lengths = compare_cli.breakdown(c, "length")
    assert lengths["2"] == {"chars_per_seed": 4, "first": 0.25, "second": 0.125}
    assert lengths["1"]["first"] is None and set(lengths) == {"1", "2", "3", "4-5", "6-8", "9+"}
    assert [compare_cli.length_bin(n) for n in (1, 3, 5, 8, 9, 40)] == ["1", "3", "4-5", "6-8", "9+", "9+"]
    assert compare_cli.main([str(tmp_path / "a"), str(tmp_path / "b"), "--by-length"]) == 0
    assert "2                 4  25.00%  12.50% -12.50 pts" in capsys.readouterr().out
    # By edit: a substitutes twice (l for L, 4 for A); c inserts once, deletes once, substitutes once.
    write("c", 1, [1, 1, 1, 1], ["Lle", "A"]), write("c", 2, [1, 1, 1, 1], ["Le", "B9"])
    ops = compare_cli.breakdown(compare_cli.compare_arms(tmp_path / "a", tmp_path / "c", resamples=20), "op")
    assert ops == {"substitution": {"chars_per_seed": 4, "first": 0.25, "second": 0.125},
                   "deletion": {"chars_per_seed": 4, "first": 0.0, "second": 0.125},
                   "insertion": {"chars_per_seed": 4, "first": 0.0, "second": 0.125}}
    assert compare_cli.main([str(tmp_path / "a"), str(tmp_path / "c"), "--by-op"]) == 0
    assert "insertion         4   0.00%  12.50% +12.50 pts" in capsys.readouterr().out
    assert compare_cli.main([str(tmp_path / "a"), str(tmp_path / "b"), "--by-class", "--seeds", "3"]) == 2
    (tmp_path / "b" / "seed2" / "test" / "samples.csv").unlink()
    assert compare_cli.main([str(tmp_path / "a"), str(tmp_path / "b"), "--by-class"]) == 2
    assert "seed2/test/samples.csv: cannot read the run's test samples" in capsys.readouterr().err
    (tmp_path / "b" / "seed2" / "test" / "samples.csv").write_text("index,reference\n0,Le\n", encoding="utf-8")
    assert compare_cli.main([str(tmp_path / "a"), str(tmp_path / "b"), "--by-length"]) == 2
    assert "no char_errors, hypothesis, length column" in capsys.readouterr().err
    (tmp_path / "b" / "seed2" / "test" / "samples.csv").write_text(
        "index,reference,hypothesis,char_errors,length\n0,Le,Le,0,2\n1,A9,A,one,2\n", encoding="utf-8")
    assert compare_cli.main([str(tmp_path / "a"), str(tmp_path / "b"), "--by-length"]) == 2
    assert "seed2/test/samples.csv line 3: char_errors 'one'" in capsys.readouterr().err
    assert compare_cli.main([str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
    assert "no such arm folder" in capsys.readouterr().err


def test_synthetic_speed_reports_both_measurements(data, generator, tmp_path):
    out = tmp_path / "speed.json"
    assert synthetic_speed.main(["--generator", str(generator), "--data", str(data), "--steps", "2", "--block", "1",
                                 "--words", "40", "--pool", "30", "--num-workers", "0", "--device", "cpu", "--json", str(out),
                                 "--out", str(tmp_path / "bench")]) == 0
    r = json.loads(out.read_text(encoding="utf-8"))
    assert r["words_per_second"]["cpu"] > 0 and r["step_time_ratio"] > 0 and r["timed_steps_per_arm"] == 2
    # The step time is measured with the cached words (built once, apart), as benchmarks.run reads them.
    assert r["cache"]["words"] == 30 and r["cache"]["build_s"] > 0 and not r["cache"]["reused"]
    assert (tmp_path / "bench" / "cache").is_dir()
    # The padded pixels of the timed batches, which the work of a step follows.
    assert r["batch_pixels"]["real"] > 0 and r["batch_pixels"]["mixed"] > 0
    assert r["pixel_ratio"] == pytest.approx(r["batch_pixels"]["mixed"] / r["batch_pixels"]["real"])
    assert r["step_time_ratio_per_pixel"] == pytest.approx(r["step_time_ratio"] / r["pixel_ratio"])


def test_tsv_dataset_is_built_once_into_lmdbs(tmp_path):
    folder = tmp_path / "copiste-like"
    rows = ["file\ttext\tdocument\tsplit"]
    for k, (split, w) in enumerate([("train", "d1"), ("train", "d2"), ("val", "d3"), ("test", "d4")]):
        gt = write_gt(folder / w, words(3, k), height=32)
        for line in gt.read_text(encoding="utf-8").splitlines():
            file, text = line.split("\t")
            rows.append(f"{w}/{file}\t{text}\t{w}\t{split}")
    (folder / "lines.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    splits = resolve_data(folder, tmp_path / "cache", progress=False)
    assert sorted(set(LmdbWordDataset(splits.train).writers)) == ["d1", "d2"]
    assert set(LmdbWordDataset(splits.test).writers) == {"d4"} and len(LmdbWordDataset(splits.val)) == 3
    created = (splits.train / "data.mdb").stat().st_mtime_ns
    assert resolve_data(folder, tmp_path / "cache", progress=False).train == splits.train
    assert (splits.train / "data.mdb").stat().st_mtime_ns == created  # cached, not rebuilt
    with pytest.raises(ValueError, match="train.lmdb"):
        resolve_data(tmp_path, tmp_path / "other", progress=False)  # neither LMDBs nor a TSV


@pytest.mark.parametrize("name,regime,level", [("cpu", "both", "lines"), ("gpu", "both", "words"),
                                               ("cpu_words", "low", "words"), ("cpu_lines", "low", "lines")])
def test_shipped_benchmark_configs_are_valid(name, regime, level):
    settings, config = load_settings(REPO / "configs" / "benchmark" / f"{name}.toml")
    check_settings(settings, config)
    assert settings["arms"] == ["baseline", "fonts", "gan", "gan+fonts"] and settings["regime"] == regime
    assert settings["level"] == level
    # A single-source arm reads each cached sample at most ~2.5 times per run.
    per_run = settings["steps"] * round(settings["synthetic_ratio"] * config["train"]["batch_size"])
    assert per_run / settings["synthetic_pool"] <= 2.5


def test_font_words_are_deterministic_per_seed_and_index():
    lexicon = ["maison", "chat", "été", "porte"]
    a = FontWordDataset(lexicon, length=20, seed=3, height=32)
    b = pickle.loads(pickle.dumps(FontWordDataset(lexicon, length=20, seed=3, height=32)))
    for i in (7, 0, 19, 7):
        sa, sb = a[i], b[i]
        assert sa.text == sb.text and sa.text in lexicon and sa.writer == sb.writer
        assert sa.writer.startswith("font:") and torch.equal(sa.image, sb.image)
        assert sa.image.shape[:2] == (1, 32) and 0 <= float(sa.image.min()) <= float(sa.image.max()) <= 1
    c = FontWordDataset(lexicon, length=20, seed=4, height=32)
    assert any(a[i].text != c[i].text or a[i].writer != c[i].writer for i in range(10))
    with pytest.raises(IndexError):
        a[20]


def test_font_words_legible_by_a_reader_take_the_first_style_it_reads():
    lexicon = ["maison", "chat", "été", "porte"]
    plain = FontWordDataset(lexicon, length=6, seed=3, height=32, styles=64)
    seen = []

    def read(images):  # reads a word only in its third style (two misreadings first)
        seen.append(images[0])
        return [plain[current].text if len(seen) == 3 else "#"]
    filtered = FontWordDataset(lexicon, length=6, seed=3, height=32, styles=64, legible_by=read, tries=4)
    for current in range(6):
        seen.clear()
        got, first = filtered[current], plain[current]
        assert len(seen) == 3 and got.text == first.text  # the text never changes
        style = random.Random(f"3:{current}:style2").randrange(64)
        assert got.writer == f"font:{style}" and torch.equal(got.image, plain.renderer.render(first.text, style))
        assert torch.equal(seen[0], first.image)
    never = FontWordDataset(lexicon, length=6, seed=3, height=32, legible_by=lambda ims: ["#"] * len(ims), tries=3)
    assert torch.equal(never[2].image, plain[2].image) and never[2].writer == plain[2].writer  # none read: the first
    with pytest.raises(ValueError, match="tries"):
        FontWordDataset(lexicon, length=6, legible_by=read, tries=0)


def test_font_words_read_a_batch_at_once_as_one_at_a_time():
    # A DataLoader batch (__getitems__) gives the items that indexing one by one gives, with one
    # reader call per attempt instead of one per word and attempt.
    lexicon = ["maison", "chat", "été", "porte", "rue", "Marie"]

    def filtered():
        ds = FontWordDataset(lexicon, length=12, seed=5, height=32, styles=64, tries=3,
                             legible_by=lambda images: read(images))
        text_of, render, calls = {}, ds.renderer.render, []

        def recording(text, style):
            image = render(text, style)
            text_of[image.numpy().tobytes()] = text
            return image
        ds.renderer.render = recording

        def read(images):  # reads a word only when its width is even: a function of the image alone
            calls.append(len(images))
            return [text_of[im.numpy().tobytes()] if im.shape[-1] % 2 == 0 else "#" for im in images]
        return ds, calls
    batched, batch_calls = filtered()
    single, single_calls = filtered()
    got = batched.__getitems__(list(range(12)))
    for i, sample in enumerate(got):
        one = single[i]
        assert (sample.text, sample.writer) == (one.text, one.writer) and torch.equal(sample.image, one.image)
    assert batch_calls[0] == 12 and len(batch_calls) <= 3 < len(single_calls)
    assert any(s.writer != p.writer for s, p in zip(got, FontWordDataset(lexicon, length=12, seed=5, height=32)))
    assert batched.__getitems__([-1])[0].text == got[11].text
    with pytest.raises(IndexError, match="12"):
        batched.__getitems__([3, 12])


def test_legible_sources_gan_fonts_filter_the_fonts_too(tmp_path):
    from .test_gan_quality import tiny_reader_checkpoint
    reader = str(tiny_reader_checkpoint(tmp_path / "r.pt"))
    settings = {**benchmarks.run.DEFAULTS, "arms": ["baseline", "fonts"], "legible_by": reader}
    _, sources = benchmarks.run.make_arms(settings, None, None)
    assert sources["fonts"].reader is None and sources["fonts"].tag == "fonts"  # by default, the GAN's words only
    _, sources = benchmarks.run.make_arms({**settings, "legible_sources": "gan,fonts"}, None, None)
    fonts = sources["fonts"]
    assert fonts.tag.startswith("fonts-legible4-") and fonts.describe()["legible_by"] == reader
    assert benchmarks.run.pool_key(fonts, ["abc"], settings, 32)["legible_tries"] == 4
    assert fonts.dataset(["abc"], 2, 0, 32, "cpu").reader.path.name == "r.pt"
    with pytest.raises(benchmarks.run.BenchmarkError, match="--legible-sources"):
        check_settings({**settings, "legible_sources": "gan,lines"}, {})


def test_split_val_tests_every_arm_on_the_validation_writers(data, generator, tmp_path):
    out = tmp_path / "val"
    assert main(args(data, out, "--split", "val", "--regime", "low", "--arms", "baseline,gan",
                     "--generator", str(generator), "--style-temperature", "1.5")) == 0
    rep = report(out)
    assert rep["protocol"]["tested_on"] == "val" and rep["protocol"]["evaluated_checkpoint"] == "last"
    assert rep["data"]["val"] is None and rep["data"]["test"]["path"].endswith("val.lmdb")
    val_words = len(LmdbWordDataset(data / "val.lmdb"))
    for arm in rep["regimes"]["low"]["arms"].values():
        for run in arm["runs"]:
            with open(f"{run['dir']}/test/samples.csv", encoding="utf-8") as f:
                assert len(list(csv.DictReader(f))) == val_words
    assert rep["synthetic"]["style_temperature"] == 1.5
    assert "gan" in rep["regimes"]["low"]["arms"]
    assert any(p.name.endswith("-T1.5-r0.5-pool40") for p in (out / "runs").glob("*/*"))
    assert "VALIDATION writers" in (out / "report.md").read_text(encoding="utf-8")


def test_style_temperature_reaches_the_gan_words_and_their_cache_key(generator):
    settings = {"synthetic_pool": 40, "synthetic_seed": 0}
    plain = benchmarks.run.make_source("gan", str(generator), None)
    wide = benchmarks.run.make_source("gan", str(generator), None, style_temperature=2.0)
    assert wide.dataset(["abc"], 2, 0, 32, "cpu").style_temperature == 2.0
    key = benchmarks.run.pool_key(plain, ["abc"], settings, 32)
    assert "style_temperature" not in key  # caches made before the setting existed stay valid
    assert benchmarks.run.pool_key(wide, ["abc"], settings, 32) == {**key, "style_temperature": 2.0}
    assert wide.tag == plain.tag + "-T2"
    with pytest.raises(ValueError, match="temperature"):
        benchmarks.run.make_source("gan", str(generator), None, style_temperature=0.0)


def test_legible_by_reaches_the_gan_words_their_cache_key_and_run_folder(generator, tmp_path, data, capsys):
    from htr_augment.gan.quality import Reader

    from .test_gan_quality import tiny_reader_checkpoint
    reader = tiny_reader_checkpoint(tmp_path / "r.pt")
    settings = {"synthetic_pool": 40, "synthetic_seed": 0}
    plain = benchmarks.run.make_source("gan", str(generator), None)
    legible = benchmarks.run.make_source("gan", str(generator), None, legible_by=str(reader), tries=3)
    ds = legible.dataset(["abc"], 2, 0, 32, "cpu")
    assert isinstance(ds.reader, Reader) and ds.reader.path == reader and ds.tries == 3
    assert plain.dataset(["abc"], 2, 0, 32, "cpu").reader is None
    key = benchmarks.run.pool_key(plain, ["abc"], settings, 32)
    assert "legible_by_sha256" not in key  # caches made before the filter existed stay valid
    assert benchmarks.run.pool_key(legible, ["abc"], settings, 32) == {
        **key, "legible_by_sha256": legible.reader_sha256, "legible_tries": 3}
    assert legible.tag.startswith(plain.tag + "-legible3-")
    assert legible.describe()["legible_by"] == str(reader)
    assert main(args(data, tmp_path / "a", "--generator", str(generator), "--legible-by", "nonesuch")) == 2
    assert "nonesuch" in capsys.readouterr().err
    assert main(args(data, tmp_path / "a", "--generator", str(generator), "--legible-by", str(reader),
                     "--legible-tries", "0")) == 2
    assert "--legible-tries" in capsys.readouterr().err


def test_gan_styles_write_the_gan_words_in_the_regime_writers_styles(data, tmp_path, capsys):
    styled_gen = tiny_generator_checkpoint(tmp_path / "gs.pt", style_encoder=True)
    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as mp:
        encoded = []
        encode = word_generator.WordGenerator.encode_styles

        def spy(gen, images, texts):
            encoded.extend(texts)
            return encode(gen, images, texts)
        mp.setattr(word_generator.WordGenerator, "encode_styles", spy)
        assert main(args(data, out, "--generator", str(styled_gen), "--arms", "baseline,gan", "--regime", "low",
                         "--gan-styles", "train", "--gan-style-mix", "0.5")) == 0
    rep = report(out)
    low = rep["regimes"]["low"]
    own = LmdbWordDataset(data / "train.lmdb", writers=low["writer_ids"])
    assert encoded and set(encoded) <= set(own.texts)  # styles of the low-resource writers' words only
    key = low["pools"]["gan"]["key"]
    assert key["style_mix"] == 0.5 and key["styles_sha256"] == benchmarks.run.styles_identity(own)
    assert rep["synthetic"]["sources"]["gan"]["styles"] == benchmarks.run.STYLES_TRAIN
    assert low["arms"]["gan"]["dir"].endswith("-styles-train-m0.5-r0.5-pool40")
    assert "in the styles of the regime's training words" in (out / "report.md").read_text(encoding="utf-8")
    # An LMDB of real words: keyed by its labels and writers, not its path.
    other = benchmarks.run.make_source("gan", str(styled_gen), None, styles=str(data / "val.lmdb"))
    assert other.styles_sha256 == benchmarks.run.styles_identity(LmdbWordDataset(data / "val.lmdb"))
    assert other.tag.endswith(f"-styles-{other.styles_sha256[:8]}-m1")
    plain = benchmarks.run.make_source("gan", str(styled_gen), None)
    assert "styles_sha256" not in benchmarks.run.pool_key(plain, ["abc"], {"synthetic_pool": 4, "synthetic_seed": 0}, 32)
    errors = [(["--generator", str(styled_gen), "--gan-style-mix", "0.5"], "needs --gan-styles"),
              (["--generator", str(styled_gen), "--gan-styles", "train", "--gan-style-mix", "2"], "--gan-style-mix"),
              (["--generator", str(styled_gen), "--gan-styles", str(tmp_path)], "no LMDB there"),
              (["--generator", str(tiny_generator_checkpoint(tmp_path / "g.pt")), "--gan-styles", "train"],
               "no style encoder")]
    for extra, message in errors:
        assert main(args(data, tmp_path / "bad", *extra)) == 2
        assert message in capsys.readouterr().err


def test_split_val_and_style_temperature_errors(data, generator, tmp_path, capsys):
    no_val = tmp_path / "noval"
    no_val.mkdir()
    for split in ("train", "test"):
        (no_val / f"{split}.lmdb").symlink_to(data / f"{split}.lmdb")
    assert main(args(no_val, tmp_path / "a", "--arms", "baseline", "--split", "val")) == 2
    assert "no validation split" in capsys.readouterr().err
    assert main(args(data, tmp_path / "a", "--generator", str(generator), "--style-temperature", "-1")) == 2
    assert "--style-temperature" in capsys.readouterr().err


def test_fonts_arm_can_use_a_chosen_subset_of_the_installed_fonts(tmp_path, capsys, data):
    from htr_augment.fonts import find_fonts
    installed = find_fonts()
    every = benchmarks.run.make_source("fonts", None, None)
    one = benchmarks.run.make_source("fonts", None, None, fonts=[installed[0].name])
    assert every.fonts == [p.name for p in installed] and every.font_paths() is None and every.tag == "fonts"
    assert one.fonts == [installed[0].name] and one.font_paths() == [installed[0]]
    assert one.tag.startswith("fonts-") and one.tag != every.tag  # its own run folder
    assert one.dataset(["abc"], 2, 0, 32, "cpu").fonts == [installed[0]]
    key = benchmarks.run.pool_key(one, ["abc"], {"synthetic_pool": 2, "synthetic_seed": 0}, 32)
    assert key != benchmarks.run.pool_key(every, ["abc"], {"synthetic_pool": 2, "synthetic_seed": 0}, 32)
    assert benchmarks.run.comma_list(" a.ttf, b.ttf ,") == ["a.ttf", "b.ttf"]
    assert main(args(data, tmp_path / "a", "--arms", "baseline,fonts", "--fonts", "Nope.ttf")) == 2
    err = capsys.readouterr().err
    assert "Nope.ttf not installed" in err and installed[0].name in err


def test_lexicon_weight_token_draws_each_word_as_often_as_listed(tmp_path, data, capsys):
    from types import SimpleNamespace

    from htr_augment.alphabet import Alphabet
    real = SimpleNamespace(texts=["de la maison", "de chat", "de la porte", "zut"])
    alphabet = Alphabet(list(" abcdehilmnoprstu"))  # no "z": "zut" cannot be learnt
    by_type = benchmarks.run.make_source("fonts", None, None)
    by_token = benchmarks.run.make_source("fonts", None, None, lexicon_weight="token")
    assert benchmarks.run.synthetic_texts(by_type, real, alphabet) == ["chat", "de", "la", "maison", "porte"]
    assert benchmarks.run.synthetic_texts(by_token, real, alphabet) == ["de", "la", "maison", "de", "chat",
                                                                        "de", "la", "porte"]
    assert by_token.tag == "fonts-tokens" and by_type.tag == "fonts"  # its own run folder
    assert by_token.describe()["lexicon_weight"] == "token"
    # A --lexicon file names the run folder by its content: another word list gets another folder.
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("chat\nchat\nporte\n", encoding="utf-8")
    b.write_text("maison\n", encoding="utf-8")
    tags = {benchmarks.run.make_source("fonts", None, str(p)).tag for p in (a, b)}
    assert len(tags) == 2 and all(t.startswith("fonts-lex-") for t in tags)
    assert benchmarks.run.synthetic_texts(benchmarks.run.make_source("fonts", None, str(a), lexicon_weight="token"),
                                          real, alphabet) == ["chat", "chat", "porte"]
    # Both arms' sources share the words of one reading of the file, as it was when read.
    settings = {**benchmarks.run.DEFAULTS, "arms": ["baseline", "fonts"]}
    _, sources = benchmarks.run.make_arms(settings, None, str(a))
    a.write_text("changed\n", encoding="utf-8")
    assert benchmarks.run.synthetic_texts(sources["fonts"], real, alphabet) == ["chat", "porte"]
    # End to end: the cached words follow the labels' frequencies; bad settings stop before training.
    assert main(args(data, tmp_path / "run", "--arms", "baseline,fonts", "--regime", "low",
                     "--lexicon-weight", "token")) == 0
    rep = report(tmp_path / "run")
    assert rep["synthetic"]["sources"]["fonts"]["lexicon_weight"] == rep["synthetic"]["lexicon_weight"] == "token"
    assert "each word as often as it is listed" in (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    pool = rep["regimes"]["low"]["pools"]["fonts"]
    regime = LmdbWordDataset(data / "train.lmdb")
    kept = set(rep["regimes"]["low"]["writer_ids"])
    assert pool["lexicon_words"] == sum(len(t.split()) for t, w in zip(regime.texts, regime.writers) if w in kept)
    assert main(args(data, tmp_path / "x", "--lexicon", str(tmp_path / "none.txt"))) == 2
    assert "--lexicon" in capsys.readouterr().err
    assert main(args(data, tmp_path / "y", "--level", "lines", "--lexicon-weight", "token")) == 2
    assert "--lexicon-weight" in capsys.readouterr().err


def test_several_generators_write_interleaved_shares_in_their_own_hands(generator, tmp_path, data, capsys):
    other = tiny_generator_checkpoint(tmp_path / "g2.pt", seed=1)
    settings = {"synthetic_pool": 40, "synthetic_seed": 0}
    one = benchmarks.run.make_source("gan", str(generator), None)
    two = benchmarks.run.make_source("gan", f"{generator},{other}", None)
    assert two.also == (other.resolve(),) and two.tag.startswith(one.tag + "+")
    key = benchmarks.run.pool_key(one, ["abc"], settings, 32)
    assert "also_generators_sha256" not in key  # one generator: caches made before stay valid
    assert benchmarks.run.pool_key(two, ["abc"], settings, 32) == {
        **key, "also_generators_sha256": [two.also_sha256[0]]}
    words = ["abc", "deff", "gh", "ijab"]
    ds = two.dataset(words, 5, 3, 32, "cpu")
    assert len(ds) == 5  # the pool's size exactly, though 5 does not split in two
    from htr_augment.synthetic import SyntheticWordDataset
    first = SyntheticWordDataset(str(generator), words, length=3, seed=3, height=32)
    second = SyntheticWordDataset(str(other), words, length=3, seed=3 + 1_000_003, height=32)
    for i in range(5):  # even items from the first generator, odd ones from the second, each its own draws
        want = (first if i % 2 == 0 else second)[i // 2]
        assert ds[i].text == want.text and torch.equal(ds[i].image, want.image)
    # The two generators' first words differ in their hands: the same text and style in each.
    text, z = first.text_and_style(0)
    a, b = (word_generator.WordGenerator.load(p).generate([text], z=z)[0] for p in (generator, other))
    assert a.shape != b.shape or not torch.equal(a, b)
    with pytest.raises(benchmarks.run.BenchmarkError, match="lines"):
        benchmarks.run.make_source("gan", f"{generator},{other}", None, level="lines")
    assert main(args(data, tmp_path / "a", "--arms", "baseline,gan", "--generator", f"{generator},{tmp_path}/none.pt")) == 2
    assert "none.pt" in capsys.readouterr().err
    out = tmp_path / "b"
    assert main(args(data, out, "--arms", "baseline,gan", "--regime", "low", "--generator", f"{generator},{other}")) == 0
    described = report(out)["synthetic"]["sources"]["gan"]
    assert described["also_generators_sha256"] == list(two.also_sha256)
    assert f"with `{other.resolve()}`" in (out / "report.md").read_text(encoding="utf-8")
    assert any(p.name.startswith(two.tag) for p in (out / "runs").glob("*/*"))
