import json
import subprocess
import sys

import pytest
import torch

from htr_augment.data.build_lmdb import BuildOptions, build
from htr_augment.data.sources import read_gt
from htr_augment.training import make_checkpoint, save_checkpoint

from .conftest import REPO, write_gt
from .fixtures_gan import ALPHABET, tiny_generator_checkpoint

TEST_WORDS = ["maison", "chat", "rue", "lac", "été", "chat", "rue", "chat", "porte", "Zoé"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("geval")
    gen = tiny_generator_checkpoint(tmp / "g.pt")
    build(read_gt(write_gt(tmp / "src", TEST_WORDS, height=32)), tmp / "test.lmdb", BuildOptions(height=32),
          inputs=["drawn"], progress=False)
    (tmp / "train.txt").write_text("maison\nchat\n", encoding="utf-8")
    from recognizer.config import load_recognizer_config
    from recognizer.model import CRNN
    config = load_recognizer_config(REPO / "configs" / "recognizer" / "tiny.toml")
    torch.manual_seed(0)
    model = CRNN(config, len(ALPHABET))
    save_checkpoint(make_checkpoint("recognizer", config, ALPHABET, 0, 0, models={"recognizer": model.state_dict()}),
                    tmp / "e.pt")
    return tmp, gen


def test_report_compares_real_gan_and_fonts(setup):
    tmp, gen = setup
    r = subprocess.run([sys.executable, "-m", "htr_augment.gan.evaluate", "--generator", str(gen), "--evaluator",
                        str(tmp / "e.pt"), "--real", str(tmp / "test.lmdb"), "--train-lexicon", str(tmp / "train.txt"),
                        "--out", str(tmp / "rep"), "-n", "50", "--styles", "3"], capture_output=True, text=True,
                       env={"OMP_NUM_THREADS": "1", **__import__("os").environ})
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp / "rep" / "report.json").read_text())
    assert rep["words"] == 9  # "Zoé" has a 'Z' the generator cannot write
    assert rep["dropped_outside_generator_alphabet"] == {"character outside alphabet": 1}
    assert rep["in_vocabulary_words"] == 4 and rep["out_of_vocabulary_words"] == 5
    for src in ("real", "gan", "fonts"):
        f = rep["fidelity"][src]
        assert f["all"]["words"] == 9 and f["in_vocabulary"]["words"] == 4
        assert 0 <= f["all"]["cer"] and rep["frechet_distance"][src] >= -1e-6
    assert rep["diversity"]["words"] == ["chat", "rue"]
    assert rep["diversity"]["gan"] > 0 and rep["diversity"]["fonts"] > 0
    md = (tmp / "rep" / "report.md").read_text()
    assert "handwriting fonts" in md and (tmp / "rep" / "grid.png").stat().st_size > 0
    assert rep["credit"] is None and "Copiste" not in md  # drawn words: no third-party data to credit
