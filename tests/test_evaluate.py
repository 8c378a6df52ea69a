"""recognizer.evaluate and recognizer.report on a tiny dataset with a fake model whose predictions are known."""
import base64
import csv
import json
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from htr_augment.alphabet import Alphabet
from htr_augment.data import WordSample
from htr_augment.data.build_lmdb import main as build_main
from htr_augment.metrics import class_errors, edit_operations
from recognizer import evaluate as ev
from recognizer.model import RecognizerOutput
from htr_augment.data.credit import COPISTE_CREDIT
from recognizer.report import write_report

from .conftest import write_gt

REFS = ["chat", "chien", "maison blanche", "été", "Paris"]
HYPS = ["chat", "chen", "maisons blanche", "ete", "paris"]
ALPHABET = Alphabet.from_labels(REFS + HYPS)


class FakeModel(nn.Module):
    """Predicts a fixed text per input width: CTC frames "c - h - a - t -", peaked at 0.97."""

    stride = 1

    def __init__(self, by_width: dict[int, str], alphabet: Alphabet):
        super().__init__()
        self.by_width, self.alphabet = by_width, alphabet

    def forward(self, images, widths):
        texts = [self.by_width[int(w)] for w in widths]
        T = max(2 * len(t) + 1 for t in texts)
        probs = torch.full((T, len(texts), len(self.alphabet)), 0.03 / (len(self.alphabet) - 1))
        probs[:, :, 0] = 0.97
        for b, text in enumerate(texts):
            for k, c in enumerate(self.alphabet.encode(text)):
                probs[2 * k, b, :] = 0.03 / (len(self.alphabet) - 1)
                probs[2 * k, b, c] = 0.97
        return RecognizerOutput(probs.log(), torch.full((len(texts),), T), None)


class ListDataset(Dataset):
    def __init__(self, texts, meta=None):
        self.samples = [WordSample(torch.rand(1, 16, 10 + 3 * i), t, f"w{i % 2}") for i, t in enumerate(texts)]
        self.meta = meta or {}

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def fake_for(dataset, hyps):
    return FakeModel({s.image.shape[-1]: h for s, h in zip(dataset.samples, hyps)}, ALPHABET)


def test_counts_breakdowns_and_report_files(tmp_path):
    ds = ListDataset(REFS, meta={"source": ["tsv:../shared/data/copiste/lines.tsv[split=test]"]})
    result = ev.evaluate(fake_for(ds, HYPS), ALPHABET, ds, batch_size=2, bootstrap=200)
    assert [s.hypothesis for s in result.samples] == HYPS
    # By hand: chien->chen deletes i; maisons inserts s; été->ete two substitutions; Paris->paris one.
    # 31 reference characters, 6 reference words.
    expected = {"exact": (5, 4), "case-insensitive": (4, 3), "accent-stripped": (3, 3),
                "case-and-accent-insensitive": (2, 2)}
    for name, (char_errors, word_errors) in expected.items():
        c = result.counts[name]
        assert (c.char_errors, c.char_total, c.word_errors, c.word_total) == (char_errors, 31, word_errors, 6), name
    assert result.cer == pytest.approx(5 / 31) and result.wer == pytest.approx(4 / 6)
    assert result.operations == {"substitutions": 3, "deletions": 1, "insertions": 1}
    assert result.confusions[0] == ("é", "e", 2)
    assert set(result.confusions[1:]) == {("P", "p", 1), ("i", "", 1), ("", "s", 1)}
    assert result.by_length == [
        {"bin": "1-5", "samples": 4, "chars": 17, "cer": 4 / 17, "wer": 3 / 4},
        {"bin": "11-20", "samples": 1, "chars": 14, "cer": 1 / 14, "wer": 1 / 2}]
    assert result.worst == [3, 1, 4, 2]  # most errors first, then highest rate, then index
    assert result.data["credit"] == COPISTE_CREDIT and result.data["outside_alphabet"] == 0

    paths = write_report(result, tmp_path / "rep")
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["report.html", "report.json", "report.md",
                                                                   "samples.csv"]
    rep = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert Fraction(rep["metrics"]["exact"]["cer"]).limit_denominator(100) == Fraction(5, 31)
    assert rep["metrics"]["accent-stripped"]["char_errors"] == 3 and rep["exact_matches"] == 1
    assert rep["normalisation"]["headline"] == "exact" and rep["data"]["credit"] == COPISTE_CREDIT
    assert [w["index"] for w in rep["worst"]] == [3, 1, 4, 2]
    rows = list(csv.DictReader(paths["csv"].open(encoding="utf-8")))
    assert [(r["reference"], r["hypothesis"], int(r["char_errors"]), int(r["length"])) for r in rows] == \
        [(r, h, e, len(r)) for r, h, e in zip(REFS, HYPS, [0, 1, 1, 2, 1])]
    assert rows[0]["writer"] == "w0" and rows[1]["writer"] == "w1"
    page = paths["html"].read_text(encoding="utf-8")
    pngs = [base64.b64decode(chunk.split("'")[0]) for chunk in page.split("data:image/png;base64,")[1:]]
    assert len(pngs) == 4 and all(p.startswith(b"\x89PNG") for p in pngs)
    assert "maisons blanche" in page and "Copiste d&#x27;un jour" in page and "exact" in page
    md = paths["md"].read_text(encoding="utf-8")
    assert "CER 16.13%" in md and "Copiste d'un jour" in md and "accent-stripped" in md
    assert not list((tmp_path / "rep").glob("*.tmp"))


def test_bootstrap_interval_contains_the_estimate_and_is_seeded():
    rng = np.random.default_rng(3)
    lengths = rng.integers(3, 40, 300)
    errors = rng.binomial(lengths, 0.08)
    point = errors.sum() / lengths.sum()
    lo, hi = ev.bootstrap_ci(errors, lengths, resamples=1000, seed=7)
    assert lo < point < hi and hi - lo < 0.05
    assert ev.bootstrap_ci(errors, lengths, resamples=1000, seed=7) == (lo, hi)
    ds = ListDataset(REFS)
    result = ev.evaluate(fake_for(ds, HYPS), ALPHABET, ds, bootstrap=500)
    for key, value in (("cer", result.cer), ("wer", result.wer)):
        assert result.ci[key][0] <= value <= result.ci[key][1]


def test_edit_operations_agree_with_the_edit_distance():
    import editdistance
    rng = np.random.default_rng(0)
    for _ in range(300):
        a, b = ("".join(rng.choice(list("abé "), rng.integers(0, 9))) for _ in range(2))
        assert len(edit_operations(a, b)) == editdistance.eval(a, b)
    assert edit_operations("le chat".split(), "la chat noir".split()) == [("S", "le", "la"), ("I", None, "noir")]


def test_class_errors_put_each_error_on_its_reference_character():
    # É->e and é->e (accented), 1->7 (digit), ',' deleted (punctuation); 's' inserted (no reference).
    out = class_errors([("Été 1,a", "ete 7a"), ("Bon", "Bons")])
    assert out == {"lowercase": (0, 4), "capital": (0, 1), "accented": (2, 2), "digit": (1, 1), "punctuation": (1, 2)}
    assert class_errors([]) == dict.fromkeys(out, (0, 0))


def test_cli_on_an_lmdb_with_beam_search(tmp_path, monkeypatch, capsys):
    words = ["al", "beta", "Noëlle"]  # distinct lengths, so distinct widths
    gt = write_gt(tmp_path / "src", words, height=24)
    assert build_main(["--gt", str(gt), "--out", str(tmp_path / "d.lmdb"), "--no-progress"]) == 0
    from htr_augment.data import LmdbWordDataset
    ds = LmdbWordDataset(tmp_path / "d.lmdb", height=24)
    alphabet = Alphabet.from_labels(words + ["Noelle"])
    model = FakeModel({ds[i].image.shape[-1]: h for i, h in enumerate(["al", "beta", "Noelle"])}, alphabet)
    monkeypatch.setattr(ev, "load_model", lambda path, device: (model, alphabet, {"data": {"height": 24}}))
    rc = ev.main(["--checkpoint", "fake.pt", "--data", str(tmp_path / "d.lmdb"), "--report", str(tmp_path / "r"),
                  "--beam", "4", "--no-progress", "--bootstrap", "100"])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))
    assert rep["metrics"]["exact"]["char_errors"] == 1 and rep["metrics"]["accent-stripped"]["char_errors"] == 0
    assert rep["decoder"] == "prefix beam search, width 4" and rep["data"]["credit"] is None
    with pytest.raises(SystemExit):
        ev.parse_args(["--checkpoint", "c", "--data", "d", "--report", "r", "--lexicon", "words.txt"])
    assert ev.main(["--checkpoint", "fake.pt", "--data", str(tmp_path / "nothing.lmdb"),
                    "--report", str(tmp_path / "r2"), "--no-progress"]) == 2
    assert "nothing.lmdb" in capsys.readouterr().err
