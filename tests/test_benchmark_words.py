"""The default benchmark, the word study, at tiny scale: a Copiste-like TSV of drawn *lines*
built into LMDBs, cut into words by an injected line checkpoint (a tiny untrained CRNN: its
alignments are poor, so segment_min_score = -inf keeps every line), every arm trained for a few
steps, one report; the cut is cached and reused on rerun; --level lines keeps the line study;
a missing shipped line model is a clear error."""
import json
import shutil

import numpy as np
import pytest
import torch

import recognizer.segment
from benchmarks.common import sha256_text
from benchmarks.run import REPO, main, parse_args
from htr_augment.alphabet import Alphabet
from htr_augment.data import LmdbWordDataset
from htr_augment.training.checkpoint import make_checkpoint, save_checkpoint
from recognizer import pretrained
from recognizer.config import make_config
from recognizer.model import CRNN

from .conftest import draw_word

LETTERS = "abcdefgh"
DOCS = [("d1", "train"), ("d2", "train"), ("d3", "train"), ("d4", "val"), ("d5", "test"), ("d6", "test")]


def write_lines(folder, per_doc: int = 3):
    """folder/lines.tsv with `per_doc` drawn lines of 2-3 words for each document (= writer)."""
    import cv2
    rnd = np.random.default_rng(0)
    rows = ["file\ttext\tdocument\tsplit"]
    for doc, split in DOCS:
        (folder / doc).mkdir(parents=True)
        for k in range(per_doc):
            words = ["".join(rnd.choice(list(LETTERS), size=rnd.integers(2, 5))) for _ in range(rnd.integers(2, 4))]
            gap = np.full((32, 14), 255, np.uint8)
            img = np.hstack([part for w in words for part in (draw_word(w), gap)][:-1])
            cv2.imwrite(str(folder / doc / f"l{k}.png"), img)
            rows.append(f"{doc}/l{k}.png\t{' '.join(words)}\t{doc}\t{split}")
    (folder / "lines.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def line_checkpoint(path):
    """An untrained tiny line recognizer (with a space class) as a training checkpoint."""
    alphabet = Alphabet(list(" " + LETTERS))
    config = make_config({"model": {"stem_channels": 4, "stages": [[1, 8], [1, 8]], "pools": [[2, 2]],
                                    "lstm_hidden": 8, "lstm_layers": 1}})
    torch.manual_seed(0)
    model = CRNN(config, len(alphabet))
    return save_checkpoint(make_checkpoint("recognizer", config, alphabet, 0, 0,
                                           models={"recognizer": model.state_dict()}), path)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("words")
    data = write_lines(root / "copiste-like")
    config = root / "bench.toml"  # the default config, with what a tiny untrained segmenter needs
    config.write_text(f'extends = "{REPO / "configs" / "benchmark" / "cpu_words.toml"}"\n'
                      f'recognizer = "{REPO / "configs" / "recognizer" / "tiny.toml"}"\n'
                      "segment_min_score = -inf\n", encoding="utf-8")
    segmenter = line_checkpoint(root / "line.pt")
    cmd = ["--config", str(config), "--data", str(data), "--out", str(root / "out"), "--segmenter", str(segmenter),
           "--steps", "3", "--seeds", "1", "--writers", "2", "--arms", "baseline,fonts", "--num-workers", "0",
           "--bootstrap", "50", "--device", "cpu", "--no-progress", "--synthetic-pool", "20"]
    assert main(cmd) == 0
    return root, data, cmd


def report(out) -> dict:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def test_the_word_study_cuts_the_lines_and_runs_every_arm(study):
    root, data, _ = study
    out = root / "out"
    rep = report(out)
    seg = rep["segmentation"]
    assert rep["protocol"]["level"] == "words" and seg["segmented"] and not seg["reused"]
    assert set(seg["splits"]) == {"train", "val", "test"} and seg["key"]["segmenter_sha256"]
    # Every line kept (min score -inf), each cut into its words, writers kept.
    lines = {s: [r.split("\t") for r in (data / "lines.tsv").read_text(encoding="utf-8").splitlines()[1:]
                 if r.split("\t")[3] == s] for s in ("train", "val", "test")}
    for split, rows in lines.items():
        words = LmdbWordDataset(rep["data"][split]["path"])
        assert words.texts == [w for r in rows for w in r[1].split(" ")]
        assert set(words.writers) == {r[2] for r in rows}
        assert seg["splits"][split]["lines_kept"] == seg["splits"][split]["lines"] == len(rows)
    assert str(out / "data") in rep["data"]["train"]["path"] and "words-" in rep["data"]["train"]["path"]
    low = rep["regimes"]["low"]
    assert list(low["arms"]) == ["baseline", "fonts"] and set(rep["regimes"]) == {"low"}
    assert low["arms"]["fonts"]["vs_baseline"] is not None and low["grids"]["fonts"]
    (run,) = low["arms"]["baseline"]["runs"]
    assert run["val_curve"] and run["val_curve"][-1][0] == 3  # the baseline's validation curve, in the report
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "cut by the line recognizer" in md and "validation CER along training" in md
    ref = rep["reference"]  # the shipped word model on the same test words
    assert ref["name"] == "copiste-words" and ref["samples"] == rep["data"]["test"]["samples"] and 0 <= ref["cer"]
    assert "copiste-words" in md and rep["wall_s"]["study"] > rep["wall_s"]["runs"] > 0


def test_a_rerun_reuses_the_cut_words_and_the_runs(study, monkeypatch):
    root, _, cmd = study
    out = root / "out"
    before = report(out)
    mdb = sorted(out.glob("data/words-*/*.lmdb/data.mdb"))
    assert len(mdb) == 3
    mtimes = [p.stat().st_mtime_ns for p in mdb]

    def refuse(*a, **kw):
        raise AssertionError("segmented again")
    monkeypatch.setattr(recognizer.segment, "segment_lines", refuse)
    # As a cut made before the line LMDBs were keyed by content was named: by their absolute paths.
    key = before["segmentation"]["key"]
    legacy = {**key, "lines": {k: {"path": str((out / "data" / f"{k}.lmdb").resolve()), "created": v["created"]}
                               for k, v in key["lines"].items()}}
    (folder,) = {p.parent.parent for p in mdb}
    old_name = folder.with_name(f"words-{sha256_text(json.dumps(legacy, sort_keys=True))[:16]}")
    shutil.copytree(folder, old_name)  # a copy, not a rename: this process still holds the LMDBs open
    shutil.rmtree(folder)
    mdb = [old_name / p.relative_to(folder) for p in mdb]
    assert main(cmd) == 0
    rep = report(out)
    assert rep["data"]["train"]["path"] == str(old_name / "train.lmdb")  # found and used where it is
    assert rep["segmentation"]["reused"] and [p.stat().st_mtime_ns for p in mdb] == mtimes
    assert rep["reference"] == before["reference"]
    assert all(r["skipped"] for a in rep["regimes"]["low"]["arms"].values() for r in a["runs"])


def test_level_lines_keeps_the_line_study(study):
    root, data, cmd = study
    i = cmd.index("--out")
    lines_cmd = cmd[:i + 1] + [str(root / "lines")] + cmd[i + 2:] + ["--level", "lines", "--arms", "baseline"]
    assert main(lines_cmd) == 0
    rep = report(root / "lines")
    assert rep["protocol"]["level"] == "lines" and rep["segmentation"] is None and rep["reference"] is None
    assert " " in "".join(LmdbWordDataset(rep["data"]["test"]["path"]).texts)  # whole lines
    assert not list((root / "lines").glob("data/words-*"))


def test_default_command_needs_the_shipped_line_model(study, tmp_path, monkeypatch, capsys):
    root, data, _ = study
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path / "weights")
    args = parse_args(["--synthetic-ratio", "0.5"])
    assert args.config is None and args.level is None  # the word study by default
    rc = main(["--synthetic-ratio", "0.5", "--data", str(data), "--out", str(tmp_path / "out"), "--arms",
               "baseline,fonts", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and str(tmp_path / "weights" / "copiste-lines.pt") in err
    assert "python -m recognizer.train --config configs/recognizer/copiste_lines.toml" in err
    assert "python -m recognizer.pretrained ship copiste-lines" in err
    assert not (tmp_path / "out" / "runs").exists()
