"""The line study at tiny scale (python -m benchmarks.run --level lines, its default config
configs/benchmark/cpu_lines.toml): a Copiste-like TSV of drawn lines, an untrained generator,
3 training steps, 12 cached synthetic lines per source. The synthetic arms mix in whole lines
(the low-resource writers' own line texts, one style per line) rather than words; the line
caches are reused on rerun; --corpus replaces the training texts, its bad lines named and left out."""
import json

import numpy as np
import pytest

from benchmarks.run import DEFAULT_CONFIGS, REPO, main, make_source, parse_args
from htr_augment.data import LmdbWordDataset

from .fixtures_gan import tiny_generator_checkpoint
from .test_benchmark import DatasetCalls
from .test_benchmark_words import write_lines


def tsv_rows(data) -> list[list[str]]:
    return [r.split("\t") for r in (data / "lines.tsv").read_text(encoding="utf-8").splitlines()[1:]]


def report(out) -> dict:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def cached(out, pool: dict) -> LmdbWordDataset:
    return LmdbWordDataset(out / pool["path"], height=32)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("lines")
    data = write_lines(root / "copiste-like", per_doc=5)
    generator = tiny_generator_checkpoint(root / "g.pt")
    cmd = ["--level", "lines", "--data", str(data), "--out", str(root / "out"), "--generator", str(generator),
           "--steps", "3", "--seeds", "1", "--writers", "2", "--num-workers", "0", "--bootstrap", "50",
           "--device", "cpu", "--no-progress", "--synthetic-pool", "12"]
    with pytest.MonkeyPatch.context() as mp:
        calls = DatasetCalls(mp)
        assert main(cmd) == 0
    assert sorted(calls.kinds) == ["fonts", "gan"]  # one line cache per source (one regime)
    return root, data, cmd


def test_level_lines_defaults_to_the_line_study_config():
    assert DEFAULT_CONFIGS["lines"] == REPO / "configs" / "benchmark" / "cpu_lines.toml"
    assert parse_args(["--corpus", "c.txt"]).lexicon == "c.txt"  # --corpus: the line level's name of --lexicon


def test_the_synthetic_arms_mix_in_lines_of_the_writers_own_texts(study):
    root, data, _ = study
    out = root / "out"
    rep = report(out)
    assert rep["protocol"]["level"] == "lines" and rep["synthetic"]["unit"] == "lines"
    assert set(rep["regimes"]) == {"low"}  # cpu_lines.toml: the low-resource regime
    low = rep["regimes"]["low"]
    own = {r[1] for r in tsv_rows(data) if r[2] in low["writer_ids"]}  # the 2 writers' line texts
    assert len(own) == 10 and all(" " in t for t in own)
    for kind, writer in (("gan", "synthetic:"), ("fonts", "font:")):
        pool = low["pools"][kind]
        assert pool["unit"] == "lines" and pool["words"] == 12 and pool["lexicon_words"] == len(own)
        key = pool["key"]
        assert key["level"] == "lines" and key["height"] == 32 and key["count"] == 12
        assert key["corpus_sha256"] and key["line_stats_sha256"] and "lexicon_sha256" not in key
        lines = cached(out, pool)
        assert len(lines) == 12 and set(lines.texts) <= own and len(set(lines.texts)) > 3
        assert all(len(t.split(" ")) >= 2 for t in lines.texts)  # whole lines, not single words
        assert all(w.startswith(writer) for w in lines.writers)
        widths = [lines[i].image.shape[-1] for i in range(len(lines))]
        chars = [len(t) for t in lines.texts]
        assert np.corrcoef(chars, widths)[0, 1] > 0.5, (kind, chars, widths)  # longer text, wider line
    # Each synthetic run was trained with its cached lines: their keys are in its fingerprint.
    for arm, kinds in (("fonts", ["fonts"]), ("gan", ["gan"]), ("gan+fonts", ["gan", "fonts"])):
        (run,) = low["arms"][arm]["runs"]
        fp = json.loads((root / "out" / run["dir"] / "result.json").read_text(encoding="utf-8"))["fingerprint"]
        assert fp["synthetic"]["pools"] == [low["pools"][k]["key"] for k in kinds]
        assert "lines" in low["arms"][arm]["dir"]


def test_a_line_widens_with_its_text_in_one_style(tmp_path):
    """The same (seed, index) gives the same style and framing; a longer text gives a wider line."""
    generator = tiny_generator_checkpoint(tmp_path / "g.pt")
    for source in (make_source("gan", str(generator), None, level="lines"),
                   make_source("fonts", None, None, level="lines")):
        short, long = (source.dataset([t], 4, 0, 32, "cpu") for t in ("ab cd", "abcdefgh abcdefgh abcdefgh"))
        for i in range(4):
            assert short[i].text == "ab cd" and long[i].text == "abcdefgh abcdefgh abcdefgh"
            assert short[i].image.shape[-2] == long[i].image.shape[-2] == 32
            assert long[i].image.shape[-1] > 2 * short[i].image.shape[-1], source.kind


def test_line_arms_take_the_generator_s_line_style_temperature(tmp_path):
    generator = tiny_generator_checkpoint(tmp_path / "g.pt", extra={"style_temperature": 1.5,
                                                                     "line_style_temperature": 1.0})
    lines, words = (make_source("gan", str(generator), None, level=level) for level in ("lines", "words"))
    assert (lines.style_temperature, words.style_temperature) == (1.0, 1.5)
    assert lines.dataset(["ab cd"], 2, 0, 32, "cpu").style_temperature == 1.0
    assert make_source("gan", str(generator), None, level="lines", style_temperature=2.0).style_temperature == 2.0


def test_the_report_lists_every_arm_on_lines(study):
    root, _, _ = study
    out = root / "out"
    low = report(out)["regimes"]["low"]
    arms = low["arms"]
    assert list(arms) == ["baseline", "fonts", "gan", "gan+fonts"]
    assert [arms[a]["synthetic_words"] for a in arms] == [0, 12, 12, 24]
    for name in ("fonts", "gan", "gan+fonts"):
        assert arms[name]["vs_baseline"]["against"] == "baseline" and "lines" in arms[name]["label"]
    for name in ("gan", "gan+fonts"):
        assert arms[name]["vs_fonts"]["against"] == "fonts"
    assert set(low["grids"]) == {"fonts", "gan", "gan+fonts"} and all((out / g).is_file() for g in low["grids"].values())
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| synthetic lines |" in md and "whole lines, one style per line" in md
    assert "CER vs real only" in md and "CER vs fonts" in md and "real + GAN lines" in md
    assert "12 lines from a corpus of 10" in md
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 3 and "the first lines it mixes in" in page


def test_a_rerun_reuses_the_line_caches_and_the_runs(study, monkeypatch):
    root, _, cmd = study
    out = root / "out"
    caches = sorted(out.glob("cache/*-lines-*.lmdb/data.mdb"))
    assert len(caches) == 2
    mtimes = [p.stat().st_mtime_ns for p in caches]
    calls = DatasetCalls(monkeypatch)
    assert main(cmd) == 0
    rep = report(out)
    assert calls.kinds == [] and [p.stat().st_mtime_ns for p in caches] == mtimes
    assert all(p["reused"] for p in rep["regimes"]["low"]["pools"].values()) and rep["cache"]["built_this_run"] == 0
    assert all(r["skipped"] for a in rep["regimes"]["low"]["arms"].values() for r in a["runs"])


def test_a_corpus_replaces_the_training_texts(study, tmp_path, capfd):
    _, _, cmd = study
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abc de fgh\nhag bed\n\nxyz ab\nfade cab dab\n", encoding="utf-8")  # x, y, z: not in training
    i = cmd.index("--out")
    out = tmp_path / "out"
    assert main(cmd[:i + 1] + [str(out)] + cmd[i + 2:] + ["--arms", "baseline,fonts", "--corpus", str(corpus)]) == 0
    rep = report(out)
    pool = rep["regimes"]["low"]["pools"]["fonts"]
    assert pool["lexicon_words"] == 3 and rep["synthetic"]["lexicon"] == str(corpus)
    assert set(cached(out, pool).texts) <= {"abc de fgh", "hag bed", "fade cab dab"}
    err = capfd.readouterr().err
    assert f"{corpus}:3: no text" in err and f"{corpus}:4: 'x' (U+0078)" in err  # rejects named by file and line
    assert "2 of 5 corpus lines left out" in err
    corpus.write_text("xyz\n", encoding="utf-8")
    assert main(cmd[:i + 1] + [str(tmp_path / "none")] + cmd[i + 2:] + ["--arms", "baseline,fonts",
                                                                       "--corpus", str(corpus)]) == 2
    assert "synthetic lines (fonts arms)" in capfd.readouterr().err
