import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from htr_augment.data.build_lmdb import BuildOptions, build
from htr_augment.data.sources import read_gt
from htr_augment.training import make_checkpoint, save_checkpoint

from .conftest import REPO, write_gt
from .fixtures_gan import ALPHABET, tiny_generator_checkpoint

TEST_WORDS = ["maison", "chat", "rue", "lac", "été", "chat", "rue", "chat", "porte", "Zoé"]
TRAIN_WORDS = ["maison", "chat", "rue", "lac", "porte", "été", "bal", "mer"] * 4  # real words for TSTR


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("geval")
    gen = tiny_generator_checkpoint(tmp / "g.pt")
    build(read_gt(write_gt(tmp / "src", TEST_WORDS, height=32)), tmp / "test.lmdb", BuildOptions(height=32),
          inputs=["drawn"], progress=False)
    build(read_gt(write_gt(tmp / "train_src", TRAIN_WORDS, height=32)), tmp / "train.lmdb",
          BuildOptions(height=32), inputs=["drawn"], progress=False)
    (tmp / "train.txt").write_text("maison\nchat\n", encoding="utf-8")
    from recognizer.config import load_recognizer_config
    from recognizer.model import CRNN
    config = load_recognizer_config(REPO / "configs" / "recognizer" / "tiny.toml")
    torch.manual_seed(0)
    model = CRNN(config, len(ALPHABET))
    save_checkpoint(make_checkpoint("recognizer", config, ALPHABET, 0, 0, models={"recognizer": model.state_dict()}),
                    tmp / "e.pt")
    return tmp, gen


def run_evaluate(tmp, gen, lexicon, out, *extra):
    r = subprocess.run([sys.executable, "-m", "htr_augment.gan.evaluate", "--generator", str(gen), "--evaluator",
                        str(tmp / "e.pt"), "--real", str(tmp / "test.lmdb"), "--train-lexicon", str(lexicon),
                        "--out", str(out), "-n", "50", "--styles", "3", *extra], capture_output=True, text=True,
                       env={"OMP_NUM_THREADS": "1", **os.environ})
    assert r.returncode == 0, r.stderr
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def test_report_compares_real_gan_and_fonts(setup):
    tmp, gen = setup
    rep, md = run_evaluate(tmp, gen, tmp / "train.txt", tmp / "rep", "--tstr-steps", "0")
    assert rep["words"] == 9  # "Zoé" has a 'Z' the generator cannot write
    assert rep["dropped_outside_generator_alphabet"] == {"character outside alphabet": 1}
    assert rep["in_vocabulary_words"] == 4 and rep["out_of_vocabulary_words"] == 5
    for src in ("real", "gan", "fonts"):
        f = rep["fidelity"][src]
        assert f["all"]["words"] == 9 and f["in_vocabulary"]["words"] == 4
        assert 0 <= f["all"]["cer"] and rep["frechet_distance"][src] >= -1e-6
    assert rep["diversity"]["words"] == ["chat", "rue"]
    assert rep["diversity"]["gan"] > 0 and rep["diversity"]["fonts"] > 0
    assert all(0 < rep["ink"][src]["stroke"] <= 1 and 0 <= rep["ink"][src]["haze"] < 1 for src in ("real", "gan", "fonts"))
    assert "stroke ink" in md
    assert "handwriting fonts" in md and (tmp / "rep" / "grid.png").stat().st_size > 0
    assert rep["credit"] is None and "Copiste" not in md  # drawn words: no third-party data to credit
    assert "tstr" not in rep and "TSTR" not in md  # --tstr-steps 0: skipped


def test_tstr_trains_on_each_source_and_tests_on_real(setup):
    tmp, gen = setup
    rep, md = run_evaluate(tmp, gen, tmp / "train.lmdb", tmp / "rep_tstr", "--tstr-steps", "12",
                           "--tstr-samples", "20", "--tstr-seed", "3")
    t = rep["tstr"]
    assert t["test_words"] == 9 and t["seed"] == 3 and t["config"] == "configs/recognizer/tstr.toml"
    for src in ("real", "gan", "fonts"):
        assert t[src]["samples"] == 20 and t[src]["steps"] == 12
        assert 0 <= t[src]["cer"] and 0 <= t[src]["wer"]
    assert "TSTR CER" in md and "train on synthetic, test on real" in md


def test_tstr_needs_real_training_images(setup, capsys):
    from htr_augment.gan.evaluate import main
    tmp, gen = setup
    with pytest.raises(SystemExit) as e:  # refused before the (slow) evaluation starts
        main(["--generator", str(gen), "--evaluator", str(tmp / "e.pt"), "--real", str(tmp / "test.lmdb"),
              "--train-lexicon", str(tmp / "train.txt"), "--out", str(tmp / "never"), "--tstr-steps", "5"])
    assert e.value.code == 2 and "must be an LMDB of real training words" in capsys.readouterr().err
    assert not (tmp / "never").exists()


def test_tstr_training_on_real_words_beats_blank_images(setup):
    """Fails if the TSTR training taught the recognizer nothing."""
    from htr_augment.data import LmdbWordDataset
    from htr_augment.gan.tstr import DEFAULT_CONFIG, WordImages, real_words, train_and_test
    from recognizer.config import load_recognizer_config
    tmp, _ = setup
    config = load_recognizer_config(DEFAULT_CONFIG)
    test = LmdbWordDataset(tmp / "test.lmdb", height=32, alphabet=ALPHABET)
    real = real_words(tmp / "train.lmdb", ALPHABET, config, 32, seed=0, progress=False)
    blank = WordImages([np.full_like(im, 255) for im in real.images], real.texts, real.writers)  # same labels
    scores = {name: train_and_test(config, words, test, ALPHABET, steps=150, progress=False)
              for name, words in (("real", real), ("blank", blank))}
    assert scores["real"]["cer"] < scores["blank"]["cer"] - 0.3, scores


def test_tstr_is_deterministic_for_a_seed(setup):
    from htr_augment.gan.tstr import run_tstr
    from htr_augment.gan.word_generator import WordGenerator
    tmp, gen = setup
    g = WordGenerator.load(gen)
    runs = [run_tstr(g, tmp / "train.lmdb", tmp / "test.lmdb", steps=4, samples=8, seed=5, progress=False)
            for _ in range(2)]
    assert runs[0] == runs[1]
    assert {runs[0][src]["samples"] for src in ("real", "gan", "fonts")} == {8}


def test_fidelity_counts_words_with_capitals_apart():
    from htr_augment.gan.evaluate import fidelity
    # A capital written as a small letter is an error on the capitalized words only.
    f = fidelity(["Montréal", "ville", "Le"], ["montréal", "ville", "le"], [True, True, False])
    assert f["with_capitals"]["words"] == 2 and f["with_capitals"]["cer"] == pytest.approx(2 / 10)
    assert f["all"]["cer"] == pytest.approx(2 / 15) and f["out_of_vocabulary"]["words"] == 1
