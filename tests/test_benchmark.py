"""benchmarks.run end to end on a tiny fixture (drawn words, fake writers, an untrained
generator, 3 training steps), and FontWordDataset."""
import csv
import hashlib
import json
import pickle
import random

import numpy as np
import pytest
import torch

import benchmarks.run
from benchmarks import synthetic_speed
from benchmarks.run import REPO, check_settings, compare, load_settings, main, resolve_data, select_writers
from htr_augment.data import LmdbWordDataset
from htr_augment.data.build_lmdb import BuildOptions, build
from htr_augment.data.sources import read_gt
from htr_augment.fonts import FontWordDataset
from htr_augment.gan import word_generator
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
    return ["--data", str(data), "--out", str(out), "--steps", "3", "--seeds", "1", "--writers", "2",
            "--num-workers", "0", "--bootstrap", "200", "--device", "cpu", "--no-progress", *extra]


@pytest.fixture(scope="module")
def gan_run(data, generator, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    assert main(args(data, out, "--generator", str(generator))) == 0
    return out


def rates(samples_csv) -> tuple[float, float]:
    """CER and WER recomputed from a run's per-sample rows (recognizer.report's samples.csv)."""
    with open(samples_csv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    total = lambda key: sum(int(r[key]) for r in rows)  # noqa: E731
    return total("char_errors") / total("length"), total("word_errors") / total("words")


def test_report_matches_the_per_sample_results(gan_run, generator):
    rep = json.loads((gan_run / "report.json").read_text(encoding="utf-8"))
    md = (gan_run / "report.md").read_text(encoding="utf-8")
    assert set(rep["regimes"]) == {"low", "full"}
    assert rep["synthetic"]["generator_sha256"] == hashlib.sha256(generator.read_bytes()).hexdigest()
    assert rep["data"]["test"] == {"path": str(rep["data"]["test"]["path"]), "samples": 10, "writers": 2}
    for regime in rep["regimes"].values():
        arms = regime["arms"]
        assert set(arms) == {"baseline", "synthetic"}
        means = {}
        for name, arm in arms.items():
            (run,) = arm["runs"]
            assert run["steps"] == 3 and run["train_wall_s"] > 0
            cer, wer = rates(f"{run['dir']}/test/samples.csv")
            assert arm["cer"]["mean"] == pytest.approx(cer, abs=1e-12)
            assert arm["wer"]["mean"] == pytest.approx(wer, abs=1e-12)
            assert arm["cer"]["std"] is None  # one seed
            means[name] = (cer, wer)
        for i, metric in enumerate(("cer", "wer")):
            c = regime["comparison"][metric]
            diff = means["synthetic"][i] - means["baseline"][i]
            assert c["difference"] == pytest.approx(diff, abs=1e-12)
            if means["baseline"][i]:
                assert c["relative_change"] == pytest.approx(diff / means["baseline"][i], abs=1e-12)
            lo, hi = c["ci95"]
            assert lo - 1e-12 <= diff <= hi + 1e-12
        assert arms["synthetic"]["label"] in md and "real only" in md
    assert rep["regimes"]["full"]["real_train_samples"] == 30
    assert rep["regimes"]["full"]["real_train_writers"] == 5
    assert "synthetic − baseline" in md and "Data:" in md


def test_low_resource_regime_uses_exactly_k_writers(gan_run, data):
    low = json.loads((gan_run / "report.json").read_text(encoding="utf-8"))["regimes"]["low"]
    assert len(low["writer_ids"]) == low["real_train_writers"] == 2
    assert set(low["writer_ids"]) <= set(TRAIN_WRITERS) and low["real_train_samples"] == 12
    assert low["writer_ids"] == select_writers(LmdbWordDataset(data / "train.lmdb").writers, 2, 0)
    assert select_writers(TRAIN_WRITERS * 3, 3, 1) == select_writers(list(reversed(TRAIN_WRITERS)), 3, 1)
    with pytest.raises(ValueError, match="only 5 writers"):
        select_writers(TRAIN_WRITERS, 6, 0)


def test_rerun_skips_finished_runs_and_fonts_reuse_the_baseline(gan_run, data, generator):
    checkpoints = sorted(gan_run.glob("runs/*/*/seed*/last.pt"))
    assert len(checkpoints) == 4
    mtimes = [p.stat().st_mtime_ns for p in checkpoints]
    assert main(args(data, gan_run, "--generator", str(generator))) == 0
    rep = json.loads((gan_run / "report.json").read_text(encoding="utf-8"))
    assert all(r["skipped"] for reg in rep["regimes"].values() for a in reg["arms"].values() for r in a["runs"])
    assert [p.stat().st_mtime_ns for p in checkpoints] == mtimes

    assert main(args(data, gan_run, "--synthetic-source", "fonts", "--regime", "low", "--seeds", "2")) == 0
    rep = json.loads((gan_run / "report.json").read_text(encoding="utf-8"))
    low = rep["regimes"]["low"]
    assert rep["synthetic"]["source"] == "fonts" and "fonts" in low["arms"]["synthetic"]["label"]
    assert set(rep["regimes"]) == {"low"}
    assert [r["skipped"] for r in low["arms"]["baseline"]["runs"]] == [True, False]  # seed 1 reused
    assert [r["skipped"] for r in low["arms"]["synthetic"]["runs"]] == [False, False]
    for arm in low["arms"].values():  # mean and std over seeds, from the per-sample rows
        cers = [rates(f"{r['dir']}/test/samples.csv")[0] for r in arm["runs"]]
        assert arm["cer"]["mean"] == pytest.approx(np.mean(cers), abs=1e-12)
        assert arm["cer"]["std"] == pytest.approx(np.std(cers, ddof=1), abs=1e-12)


def test_an_interrupted_run_resumes(data, tmp_path, monkeypatch):
    real_train = benchmarks.run.train
    monkeypatch.setattr(benchmarks.run, "train", lambda *a, **kw: real_train(*a, **kw, stop_after=1))  # as if Ctrl-C
    cmd = args(data, tmp_path, "--synthetic-source", "none", "--regime", "low")
    assert main(cmd) == 130
    (run,) = tmp_path.glob("runs/*/baseline/seed1")
    assert load_checkpoint(run / "last.pt")["step"] == 1 and not (run / "result.json").exists()
    monkeypatch.setattr(benchmarks.run, "train", real_train)
    assert main(cmd) == 0
    record = json.loads((run / "result.json").read_text(encoding="utf-8"))
    assert record["steps"] == 3 and record["train_sessions"] == 2
    assert load_checkpoint(run / "last.pt")["step"] == 3


def test_clear_errors(data, generator, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(word_generator, "PACKAGE_WEIGHTS", tmp_path / "not-shipped.pt")
    assert main(args(data, tmp_path / "a")) == 2
    err = capsys.readouterr().err
    assert "--generator" in err and "not-shipped.pt" in err
    assert main(args(data, tmp_path / "a", "--generator", str(tmp_path / "missing.pt"))) == 2
    assert "missing.pt" in capsys.readouterr().err
    for ratio in ("1.5", "0"):
        assert main(args(data, tmp_path / "a", "--generator", str(generator), "--synthetic-ratio", ratio)) == 2
        assert "--synthetic-ratio" in capsys.readouterr().err
    assert main(args(data, tmp_path / "a", "--synthetic-source", "none", "--writers", "9")) == 2
    assert "only 5 writers" in capsys.readouterr().err
    assert not (tmp_path / "a" / "runs").exists()  # every check ran before any training


def test_a_changed_setting_does_not_reuse_a_run(gan_run, data, capsys):
    assert main(args(data, gan_run, "--synthetic-source", "none", "--regime", "low", "--steps", "4")) == 2
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
    syn[1]["references_sha256"] = "other"
    with pytest.raises(ValueError, match="same samples"):
        compare(base, syn, resamples=10)


def test_synthetic_speed_reports_both_measurements(data, generator, tmp_path):
    out = tmp_path / "speed.json"
    assert synthetic_speed.main(["--generator", str(generator), "--data", str(data), "--steps", "2", "--block", "1",
                                 "--words", "40", "--num-workers", "0", "--device", "cpu", "--json", str(out)]) == 0
    r = json.loads(out.read_text(encoding="utf-8"))
    assert r["words_per_second"]["cpu"] > 0 and r["step_time_ratio"] > 0 and r["timed_steps_per_arm"] == 2


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


@pytest.mark.parametrize("name,regime", [("cpu", "both"), ("gpu", "both"), ("cpu_words", "low")])
def test_shipped_benchmark_configs_are_valid(name, regime):
    settings, config = load_settings(REPO / "configs" / "benchmark" / f"{name}.toml")
    check_settings(settings, config)
    assert settings["synthetic_source"] == "gan" and settings["regime"] == regime


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
