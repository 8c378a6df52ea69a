"""Recognizers shipped by name (recognizer.pretrained): resolution, clear errors, the shipped
copiste-words reading real Copiste words, and `ship` turning a training checkpoint into
weights-only files with a model card."""
import json

import pytest
import torch

from htr_augment.alphabet import Alphabet
from htr_augment.data import LmdbWordDataset
from htr_augment.data.build_lmdb import BuildOptions, build
from htr_augment.data.sources import read_gt, read_tsv
from htr_augment.training.checkpoint import load_checkpoint
from recognizer import evaluate as ev
from recognizer import load_recognizer, pretrained
from recognizer.config import make_config
from recognizer.pretrained import PRETRAINED, PretrainedError, resolve
from recognizer.segment import SegmentOptions, segment_lines
from recognizer.train import train

from .conftest import write_gt


def test_unknown_name_lists_the_names(tmp_path):
    with pytest.raises(PretrainedError, match="copiste-lines, copiste-words"):
        load_recognizer("copiste-sentences")
    assert resolve(tmp_path / "x.pt") == tmp_path / "x.pt"  # a path stays a path (and fails as a missing file)


def test_cli_with_an_unknown_name_says_which_names_exist(tmp_path, capsys):
    rc = ev.main(["--checkpoint", "copiste-pages", "--data", str(tmp_path), "--report", str(tmp_path / "r")])
    assert rc == 2 and "names: copiste-lines, copiste-words" in capsys.readouterr().err


def test_missing_weights_name_the_file_and_the_commands(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path / "weights")
    with pytest.raises(PretrainedError) as e:
        load_recognizer("copiste-lines")
    msg = str(e.value)
    assert str(tmp_path / "weights" / "copiste-lines.pt") in msg
    assert PRETRAINED["copiste-lines"].train_command in msg
    assert "python -m recognizer.pretrained ship copiste-lines runs/copiste_lines/best.pt" in msg


def test_shipped_copiste_words_reads_real_words(copiste, tmp_path):
    """The shipped word model cuts 3 real Copiste test lines into words (forced alignment on its
    own posteriors) and reads them without the labels: most characters right, some words exact."""
    entry = PRETRAINED["copiste-words"]
    assert entry.path.is_file() and entry.path.stat().st_size < 10e6
    ckpt = load_checkpoint(entry.path, kind="recognizer")
    assert ckpt["optimizers"] == {} and ckpt["rng"] == [] and ckpt["extra"]["weights_only"]
    assert "BAnQ" in ckpt["extra"]["data_credit"] and ckpt["extra"]["metrics"]["cer"] < 0.35
    assert "Copiste d'un jour, BAnQ, CC BY 4.0" in entry.card.read_text(encoding="utf-8")

    model, alphabet, config = load_recognizer("copiste-words")
    items = list(read_tsv(copiste / "lines.tsv", "test"))[:3]
    build(items, tmp_path / "lines.lmdb", BuildOptions(), inputs=[f"tsv:{copiste / 'lines.tsv'}"], progress=False)
    report = segment_lines(model, alphabet, tmp_path / "lines.lmdb", tmp_path / "words.lmdb",
                           SegmentOptions(min_score=float("-inf")), height=config["data"]["height"], progress=False)
    assert report.words >= 10
    words = LmdbWordDataset(tmp_path / "words.lmdb", height=config["data"]["height"])
    result = ev.evaluate(model, alphabet, words, bootstrap=0)
    assert result.cer < 0.5, [(s.reference, s.hypothesis) for s in result.samples]
    assert sum(s.char_errors == 0 for s in result.samples) >= 3

    # The command line takes the name too, and the report records it.
    rc = ev.main(["--checkpoint", "copiste-words", "--data", str(tmp_path / "words.lmdb"), "--report",
                  str(tmp_path / "report"), "--bootstrap", "50", "--no-progress"])
    assert rc == 0
    rep = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    assert json.dumps(rep).count("copiste-words") >= 1


def tiny_recognizer(tmp_path, steps: int = 4):
    """A tiny recognizer trained for a few steps on drawn words: (training checkpoint, word LMDB)."""
    build(list(read_gt(write_gt(tmp_path / "img", ["ab", "ba", "abc", "cab", "ca"] * 3, height=32))),
          tmp_path / "words.lmdb", BuildOptions(), progress=False)
    ds = LmdbWordDataset(tmp_path / "words.lmdb", height=32)
    config = make_config({"model": {"stem_channels": 4, "stages": [[1, 8], [1, 8]], "pools": [[2, 2]], "lstm_hidden": 8,
                                    "lstm_layers": 1},
                          "train": {"batch_size": 4, "max_steps": steps, "num_workers": 0, "warmup_steps": 1,
                                    "log_every": 1, "checkpoint_every": steps}, "augment": {"enabled": False}})
    result = train(config, ds, ds, tmp_path / "run", progress=False)
    return result.best_checkpoint, tmp_path / "words.lmdb"


def test_ship_writes_weights_only_a_card_and_loads_by_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path / "weights")
    ckpt_path, words = tiny_recognizer(tmp_path)
    rc = pretrained.main(["ship", "copiste-lines", str(ckpt_path), "--test", str(words), "--bootstrap", "50",
                          "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    shipped = tmp_path / "weights" / "copiste-lines.pt"
    assert shipped.is_file() and not list((tmp_path / "weights").glob("*.staged*")) \
        and not list((tmp_path / "weights").glob("*.tmp"))
    small, full = load_checkpoint(shipped), load_checkpoint(ckpt_path)
    assert small["optimizers"] == {} and small["schedulers"] == {} and small["rng"] == []
    assert shipped.stat().st_size < ckpt_path.stat().st_size
    assert small["extra"]["source_sha256"] == pretrained.file_sha256(ckpt_path)
    assert small["extra"]["metrics"]["samples"] == len(LmdbWordDataset(words))
    for k, v in full["models"]["recognizer"].items():
        assert torch.equal(small["models"]["recognizer"][k], v)
    card = (tmp_path / "weights" / "copiste-lines.md").read_text(encoding="utf-8")
    assert "test CER" in card and PRETRAINED["copiste-lines"].train_command in card and "CC BY 4.0" in card

    model, alphabet, _ = load_recognizer("copiste-lines")  # by name, from the (patched) package folder
    assert alphabet == Alphabet(full["alphabet"]) and not model.training
    listed = {row["name"]: row for row in pretrained.describe()}
    assert listed["copiste-lines"]["shipped"] and "create_with" in listed["copiste-words"]


def test_ship_refuses_a_missing_test_set_and_ships_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path / "weights")
    ckpt_path, _ = tiny_recognizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="htr-build-lmdb"):
        pretrained.ship("copiste-lines", ckpt_path, test_data=str(tmp_path / "nothing.lmdb"))
    assert not (tmp_path / "weights" / "copiste-lines.pt").exists()
