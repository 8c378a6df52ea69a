"""htr-build-lmdb on real Copiste data and on every kind of bad input."""
import csv
import subprocess
import sys

import cv2
import lmdb
import numpy as np
import pytest

from htr_augment.data import build_lmdb as bl
from htr_augment.data import lmdb_format
from htr_augment.data.sources import read_alto, read_gt

from .conftest import draw_word, write_gt


def read_standard(path):
    """A reader written only from the standard key layout (num-samples, image-/label-%09d)."""
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        n = int(txn.get("num-samples".encode()))
        out = [(txn.get(("image-%09d" % i).encode()), txn.get(("label-%09d" % i).encode()).decode("utf-8"))
               for i in range(1, n + 1)]
    env.close()
    return out


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "htr_augment.data.build_lmdb", *map(str, args), "--no-progress"],
                          capture_output=True, text=True)


def test_copiste_train_split_is_byte_identical_for_a_standard_reader(copiste, tmp_path):
    out = tmp_path / "train.lmdb"
    r = run_cli("--tsv", copiste / "lines.tsv", "--split", "train", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "wrote 4104 samples" in r.stderr
    samples = read_standard(out)
    assert len(samples) == 4104
    rows = [row for row in csv.DictReader(open(copiste / "lines.tsv", encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE)
            if row["split"] == "train"]
    for (image, label), row in zip(samples, rows):
        assert image == (copiste / row["file"]).read_bytes()
        assert label == row["text"]
    env = lmdb_format.open_readonly(out)
    with env.begin() as txn:
        meta = lmdb_format.read_meta(txn)
        assert txn.get(lmdb_format.writer_key(1)).decode() == rows[0]["document"]
        all_rows = list(csv.DictReader(open(copiste / "lines.tsv", encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))
        first_line = all_rows.index(rows[0]) + 2  # 1-based, after the header
        assert txn.get(lmdb_format.source_key(1)).decode() == f"{copiste / 'lines.tsv'}:{first_line}"
    assert meta["num_samples"] == 4104 and meta["counts"]["writers"] == len({r["document"] for r in rows})
    assert "é" in meta["alphabet"] and meta["alphabet"] == sorted(set("".join(r["text"] for r in rows)))
    assert not lmdb_format.partial_path(out).exists()
    assert not (out / "lock.mdb").exists()


def test_gt_file_with_height_normalisation(tmp_path):
    gt = write_gt(tmp_path / "src", ["alpha", "beta", "Noël"], height=40)
    out = tmp_path / "words.lmdb"
    r = run_cli("--gt", gt, "--height", 24, "--out", out)
    assert r.returncode == 0, r.stderr
    samples = read_standard(out)
    assert [label for _, label in samples] == ["alpha", "beta", "Noël"]
    for image, label in samples:
        img = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_UNCHANGED)
        assert img.ndim == 2 and img.shape[0] == 24
    with lmdb_format.open_readonly(out).begin() as txn:
        assert lmdb_format.read_meta(txn)["image_height"] == 24


def test_lmdb_input_reencodes_at_a_height_keeping_labels_writers_and_sources(tmp_path, capsys):
    from htr_augment.data import LmdbWordDataset
    build = lambda *a: bl.main([*map(str, a), "--no-progress"])  # noqa: E731  (in-process: no torch start-up)
    gt = write_gt(tmp_path / "src", ["alpha", "beta", "Noël"], height=40)
    src, out = tmp_path / "orig.lmdb", tmp_path / "h24.lmdb"
    assert build("--gt", gt, "--out", src, "--writer", "w7") == 0
    (tmp_path / "abc.txt").write_text("abelhpt", encoding="utf-8")
    capsys.readouterr()
    assert build("--lmdb", src, "--height", 24, "--alphabet", tmp_path / "abc.txt", "--out", out) == 0
    # "Noël" is outside the alphabet: rejected and counted, not lost silently.
    err = capsys.readouterr().err
    assert "wrote 2 samples" in err and "character outside alphabet" in err
    old, new = LmdbWordDataset(src, height=24), LmdbWordDataset(out)
    assert new.height == 24 and new.texts == ["alpha", "beta"] and new.writers == ["w7", "w7"]
    for i in range(2):  # the same pixels as resizing the original at read time
        assert np.array_equal(new[i].image.numpy(), old[i].image.numpy())
    with lmdb_format.open_shared(src).begin() as a, lmdb_format.open_shared(out).begin() as b:
        assert b.get(lmdb_format.source_key(1)) == a.get(lmdb_format.source_key(1)) == f"{gt}:1".encode()
    # Reading and writing one LMDB at once is refused before anything is touched.
    with pytest.raises(SystemExit) as e:
        build("--lmdb", out, "--height", 16, "--out", out, "--overwrite")
    assert e.value.code == 2 and "also --out" in capsys.readouterr().err and LmdbWordDataset(out).height == 24
    assert build("--lmdb", tmp_path / "nowhere.lmdb", "--out", tmp_path / "x.lmdb") == 2
    assert "nowhere.lmdb" in capsys.readouterr().err and not (tmp_path / "x.lmdb").exists()


def test_seed_folder_naming(tmp_path):
    src = tmp_path / "seed"
    src.mkdir()
    for name in ["maison (1)", "maison (2)", "chat (1)", "porte"]:
        cv2.imwrite(str(src / f"{name}.png"), draw_word(name.split(" (")[0]))
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "seed.lmdb"
    assert run_cli("--folder", src, "--out", out).returncode == 0
    assert sorted(label for _, label in read_standard(out)) == ["chat", "maison", "maison", "porte"]


def test_alto_pages_are_cropped_by_polygon(copiste, tmp_path):
    items = list(read_alto(copiste / "pages"))
    assert len(items) == 28  # TextLines in the two ALTO files
    _, crop = items[1].load()
    assert crop.ndim == 2 and crop.shape[1] > crop.shape[0] > 20
    out = tmp_path / "pages.lmdb"
    r = run_cli("--alto", copiste / "pages", "--out", out)
    assert r.returncode == 0, r.stderr
    labels = [label for _, label in read_standard(out)]
    assert len(labels) == 28
    assert all(labels)


def test_alto_outside_polygon_is_white(tmp_path):
    page = np.zeros((100, 200), np.uint8)  # a black page: every kept pixel stays black
    cv2.imwrite(str(tmp_path / "p.png"), page)
    (tmp_path / "p.xml").write_text(
        '<?xml version="1.0"?><alto xmlns="http://www.loc.gov/standards/alto/ns-v4#"><Description>'
        '<sourceImageInformation><fileName>p.png</fileName></sourceImageInformation></Description>'
        '<Layout><Page><PrintSpace><TextBlock><TextLine ID="l1"><Shape><Polygon POINTS="10 10 110 10 10 60"/>'
        '</Shape><String CONTENT="triangle"/></TextLine><TextLine ID="l2" HPOS="0" VPOS="70" WIDTH="150" HEIGHT="20">'
        '<String CONTENT="box"/><SP/><String CONTENT="two"/></TextLine></TextBlock></PrintSpace></Page></Layout></alto>',
        encoding="utf-8")
    items = list(read_alto(tmp_path / "p.xml"))
    assert [i.label for i in items] == ["triangle", "box two"]
    _, tri = items[0].load()
    assert tri.shape == (51, 101)
    assert tri[2, 2] == 0 and tri[48, 95] == 255  # inside vs. outside the triangle
    _, box = items[1].load()
    assert box.shape == (21, 151) and (box == 0).all()


def test_every_rejection_reason_is_reported(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    cv2.imwrite(str(src / "good.png"), draw_word("bon"))
    cv2.imwrite(str(src / "narrow.png"), draw_word("x")[:, :10])
    (src / "corrupt.png").write_bytes(cv2.imencode(".png", draw_word("abc"))[1].tobytes()[:40])
    (src / "alpha.txt").write_text("abcdefghijklmnopqrstuvwxyz", encoding="utf-8")
    lines = ["good.png\tbon", "missing.png\tabsent", "corrupt.png\tabc", "good.png\t   ", "good.png\tçà",
             "narrow.png\tlongword", "no tab here"]
    (src / "gt.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "o.lmdb"
    r = run_cli("--gt", src / "gt.txt", "--alphabet", src / "alpha.txt", "--out", out)
    assert r.returncode == 0, r.stderr
    assert [label for _, label in read_standard(out)] == ["bon"]
    rows = list(csv.reader(open(tmp_path / "o.lmdb.rejects.tsv", encoding="utf-8"), delimiter="\t"))
    assert rows[0] == ["source", "reason", "detail"]
    by_line = {row[0].rsplit(":", 1)[1]: row for row in rows[1:]}
    assert by_line["2"][1] == "missing file" and "missing.png" in by_line["2"][2]
    assert by_line["3"][1] == "undecodable image" and "corrupt.png" in by_line["3"][2]
    assert by_line["4"][1] == "empty label"
    assert by_line["5"][1] == "character outside alphabet" and "'ç'" in by_line["5"][2]
    assert by_line["6"][1] == "too narrow for CTC"
    assert by_line["7"][1] == "malformed row"
    assert "rejected 6 samples" in r.stderr and "too narrow for CTC" in r.stderr


def test_nothing_written_exits_nonzero(tmp_path):
    (tmp_path / "gt.txt").write_text("missing.png\tword\n", encoding="utf-8")
    r = run_cli("--gt", tmp_path / "gt.txt", "--out", tmp_path / "o.lmdb")
    assert r.returncode == 1
    assert "no sample was written" in r.stderr
    assert not (tmp_path / "o.lmdb").exists()


def test_non_utf8_tsv_names_file_and_line(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), draw_word("ok"))
    (tmp_path / "l.tsv").write_bytes("file\ttext\na.png\tok\na.png\tcaf\xe9\n".encode("latin-1"))
    r = run_cli("--tsv", tmp_path / "l.tsv", "--out", tmp_path / "o.lmdb")
    assert r.returncode == 2
    assert f"{tmp_path / 'l.tsv'}:3: not UTF-8" in r.stderr
    assert not (tmp_path / "o.lmdb").exists() and not (tmp_path / "o.lmdb.partial").exists()


def test_existing_output_is_not_overwritten_without_flag(tmp_path):
    gt = write_gt(tmp_path / "src", ["un", "deux"])
    out = tmp_path / "o.lmdb"
    assert run_cli("--gt", gt, "--out", out).returncode == 0
    r = run_cli("--gt", gt, "--out", out)
    assert r.returncode == 2 and "already exists" in r.stderr
    write_gt(tmp_path / "src", ["trois"])
    assert run_cli("--gt", gt, "--out", out, "--overwrite").returncode == 0
    assert [label for _, label in read_standard(out)] == ["trois"]


class Crash(Exception):
    pass


def crashing(items, at):
    """The item list, but loading item `at` raises (a crash mid-build)."""
    items = list(items)
    good = items[at].load

    def boom():
        raise Crash

    items[at].load = boom
    return items, good


@pytest.mark.parametrize("exc", [Crash, KeyboardInterrupt])
def test_interrupted_build_resumes_without_loss_or_duplicates(tmp_path, exc):
    words = [f"mot{i}" for i in range(57)]
    gt = write_gt(tmp_path / "src", words)
    out = tmp_path / "o.lmdb"
    opts = bl.BuildOptions()
    items, good = crashing(read_gt(gt), 37)
    if exc is KeyboardInterrupt:
        items[37].load = lambda: (_ for _ in ()).throw(KeyboardInterrupt)
    with pytest.raises(exc):
        bl.build(items, out, opts, inputs=["x"], commit_every=10, progress=False)
    assert not out.exists()
    partial = lmdb_format.partial_path(out)
    assert partial.is_dir()
    with pytest.raises(FileExistsError, match="--resume"):
        bl.build(read_gt(gt), out, opts, inputs=["x"], progress=False)
    with pytest.raises(ValueError, match="other inputs or options"):
        bl.build(read_gt(gt), out, bl.BuildOptions(height=20), inputs=["x"], resume=True, progress=False)
    report = bl.build(read_gt(gt), out, opts, inputs=["x"], resume=True, commit_every=10, progress=False)
    # A crash loses the uncommitted tail (redone on resume); Ctrl-C commits everything done.
    assert report.resumed_from == (30 if exc is Crash else 37)
    assert [label for _, label in read_standard(out)] == words
    with pytest.raises(FileNotFoundError):
        lmdb_format.open_readonly(tmp_path / "nowhere.lmdb")


def test_map_size_grows_on_demand(tmp_path, monkeypatch):
    monkeypatch.setattr(lmdb_format, "_INITIAL_MAP_SIZE", 1 << 16)
    gt = write_gt(tmp_path / "src", [f"word{i}" for i in range(60)], height=64, px_per_char=40)
    out = tmp_path / "o.lmdb"
    bl.build(read_gt(gt), out, bl.BuildOptions(), inputs=["x"], commit_every=1000, progress=False)
    samples = read_standard(out)
    assert len(samples) == 60 and sum(len(i) for i, _ in samples) > (1 << 16)


def test_help_explains_inputs():
    r = subprocess.run([sys.executable, "-m", "htr_augment.data.build_lmdb", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for flag in ("--tsv", "--gt", "--folder", "--alto", "--lmdb", "--resume", "--height", "--alphabet"):
        assert flag in r.stdout
