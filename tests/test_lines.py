"""Synthetic lines (issue 11): one hand per line, measured layout, corpus rejects, exports."""
import json
import random
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from htr_augment import CTCCollate, FontLineDataset, SyntheticLineDataset, WordSample
from htr_augment.data.lmdb_format import LmdbWriter
from htr_augment.images import encode_png, ink_mask, to_uint8
from htr_augment.line_stats import PACKAGE_STATS, PERCENTILES, LineStats, core_band, measure_stats
from htr_augment.lines import load_corpus

from .conftest import REPO, draw_word
from .fixtures_gan import ALPHABET, tiny_generator_checkpoint
from .test_synthetic import read_standard

TEXTS = ["le chat", "la maison de la rue", "pré", "un lac dans la ville", "été"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_generator_checkpoint(tmp_path_factory.mktemp("g") / "g.pt")


def write_stats(path, gap=1.0, offset=0.0, slant=0.0, ratio=0.28, core_mid=0.58):
    """A stats file whose every draw is the given value (constant percentile tables)."""
    q = {"gap_line": [gap] * len(PERCENTILES), "gap_rel": [1.0] * len(PERCENTILES),
         "baseline_offset": [offset] * len(PERCENTILES), "slant_jitter": [slant] * len(PERCENTILES)}
    stats = LineStats(q, ratio, core_mid, {"note": "test"})
    Path(path).write_text(stats.to_json(), encoding="utf-8")
    return path


def test_line_width_grows_with_its_text_gan_and_fonts(ckpt):
    corpus = ["ab", "ab cd", "ab cd efgh ijkl", "ab cd efgh ijkl mnop qrst uvw"]
    for ds in (SyntheticLineDataset(ckpt, corpus, height=48, seed=2), FontLineDataset(corpus, height=48, seed=2)):
        items = [ds[i] for i in range(len(corpus))]
        assert [s.text for s in items] == corpus
        assert all(isinstance(s, WordSample) and s.image.shape[:2] == (1, 48) for s in items)
        assert all(0 <= float(s.image.min()) and float(s.image.max()) <= 1 for s in items)
        widths = [s.image.shape[-1] for s in items]
        assert widths == sorted(widths) and widths[-1] > 3 * widths[0], widths


def test_every_word_of_a_line_comes_from_the_line_s_one_z(ckpt):
    ds = SyntheticLineDataset(ckpt, TEXTS, height=40, seed=5, chunk_size=3)
    calls = []
    real_generate = ds.generator.generate

    def spy(texts, z=None, **kw):
        calls.append((list(texts), z.clone()))
        return real_generate(texts, z=z, **kw)

    ds.generator.generate = spy
    items = [ds[i] for i in range(3)]  # one chunk: one generate call for all their words
    assert len(calls) == 1
    words, z = calls[0]
    assert words == [w for t in TEXTS[:3] for w in t.split()]
    row = 0
    line_z = []
    for i, text in enumerate(TEXTS[:3]):
        n = len(text.split())
        _, zi, layout = ds.plan(i)
        assert torch.equal(z[row:row + n], zi.expand(n, -1))  # every word: the line's one z
        line_z.append(zi)
        row += n
        # the same line as WordGenerator.generate_line with that z and layout
        alone = real_generate.__self__.generate_line(text, z=zi, layout=layout, stats=ds.stats, height=40)
        assert alone.shape == items[i].image.shape
        assert (alone - items[i].image).abs().max() <= 2.5 / 255  # batch mates change float order only
    assert not torch.equal(line_z[0], line_z[1])


def test_items_are_deterministic_and_the_same_from_two_workers(ckpt):
    ds = SyntheticLineDataset(ckpt, TEXTS * 2, height=32, seed=1, chunk_size=4)
    other = SyntheticLineDataset(ckpt, TEXTS * 2, height=32, seed=1, chunk_size=3)
    for i in (7, 0, 9):
        assert torch.allclose(ds[i].image, other[i].image, atol=2.5 / 255) and ds[i].writer == f"synthetic:1:{i}"
    assert ds.alphabet.chars == sorted(ALPHABET.chars + [" "])  # lines hold spaces
    loader = DataLoader(ds, batch_size=5, num_workers=2, collate_fn=CTCCollate(ds.alphabet))
    batches = list(loader)
    assert [t for b in batches for t in b["texts"]] == TEXTS * 2
    first = CTCCollate(ds.alphabet)([ds[i] for i in range(5)])
    assert torch.allclose(batches[0]["images"], first["images"], atol=2.5 / 255)
    drawn = SyntheticLineDataset(ckpt, TEXTS, length=50, seed=3, height=32)
    assert len(drawn) == 50 and {drawn[i].text for i in range(50)} <= set(TEXTS)
    fonts = FontLineDataset(TEXTS, seed=4, height=32)
    assert torch.equal(fonts[2].image, FontLineDataset(TEXTS, seed=4, height=32)[2].image)


def _gap_in_xheights(image: torch.Tensor) -> float:
    """The widest ink-free column run inside a two-word line, over the line's x-height."""
    mask = ink_mask(to_uint8(image))
    cols = np.flatnonzero(mask.any(axis=0))
    inner = mask.any(axis=0)[cols[0]:cols[-1] + 1]
    runs, run = [], 0
    for c in inner:
        run = 0 if c else run + 1
        runs.append(run)
    top, bottom = core_band(mask)
    return max(runs) / (bottom - top)


def test_gaps_and_offsets_follow_the_stored_statistics(tmp_path, ckpt):
    wide, narrow = write_stats(tmp_path / "wide.json", gap=3.0), write_stats(tmp_path / "narrow.json", gap=0.8)
    for path, expected in ((wide, 3.0), (narrow, 0.8)):
        ds = FontLineDataset(["maison nouvelle"] * 3, height=64, seed=0, stats=path)
        assert ds.stats.info["note"] == "test" and ds.stats.info["path"] == str(path)
        for i in range(3):
            layout = ds.plan(i)[2]
            assert layout.gaps == [pytest.approx(expected)] and layout.offsets == [0.0, 0.0]
            assert _gap_in_xheights(ds[i].image) == pytest.approx(expected, rel=0.2)
    # the shipped statistics: sampled values stay within their stored 1st..99th percentiles
    shipped = LineStats.load()
    assert shipped.info["path"] == str(PACKAGE_STATS) and shipped.info["counts"]["lines_measured"] > 1000
    rng = random.Random(0)
    for _ in range(200):
        layout = shipped.sample_layout(4, rng)
        q = shipped.quantiles
        assert all(q["baseline_offset"][0] <= o <= q["baseline_offset"][-1] for o in layout.offsets)
        assert all(q["slant_jitter"][0] <= s <= q["slant_jitter"][-1] for s in layout.slants)
        assert all(0 <= g <= q["gap_line"][-1] * q["gap_rel"][-1] for g in layout.gaps)
    # a dataset without stats= uses the shipped ones
    assert SyntheticLineDataset(ckpt, TEXTS).stats.quantiles == shipped.quantiles
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a line-statistics file"):
        LineStats.load(tmp_path / "bad.json")


def test_measured_gaps_are_those_of_the_real_lines(tmp_path):
    """Lines made of drawn words at known gaps, cut as recognizer.segment cuts them."""
    from recognizer.segment import crop_word, ink_columns
    gaps_px = [20, 30, 25, 40]
    lines_w = LmdbWriter(tmp_path / "lines.lmdb", {})
    words_w = LmdbWriter(tmp_path / "words.lmdb", {})
    expected = []
    for n, gap in enumerate(gaps_px, 1):
        words = ["maison", "dans", "une", "ville"][: 2 + n % 3]
        imgs = [draw_word(w, height=64) for w in words]
        imgs = [im[:, np.flatnonzero((im < 128).any(axis=0))[0]:np.flatnonzero((im < 128).any(axis=0))[-1] + 1]
                for im in imgs]
        parts = [np.full((64, 10), 255, np.uint8)]
        for k, im in enumerate(imgs):
            parts += [im, np.full((64, gap if k < len(imgs) - 1 else 10), 255, np.uint8)]
        line = np.concatenate(parts, axis=1)
        src = f"lines.tsv:{n}"
        lines_w.add(encode_png(line), " ".join(words), "w", src)
        ink, x = ink_columns(line), 10
        for k, (w, im) in enumerate(zip(words, imgs), 1):
            words_w.add(encode_png(crop_word(line, x, x + im.shape[1], ink, 4)), w, "w", f"{src}#word{k}")
            x += im.shape[1] + gap
        top, bottom = core_band(ink_mask(line))
        expected.append(gap / (bottom - top))
    lines_w.finish({})
    words_w.finish({"segmentation": {"pad": 4}, "credit": "test credit"})
    stats, counts = measure_stats(tmp_path / "lines.lmdb", tmp_path / "words.lmdb")
    assert counts["lines_measured"] == 4 and counts["gaps"] == sum(len(["maison", "dans", "une", "ville"][: 2 + n % 3]) - 1
                                                                   for n in range(1, 5))
    assert stats.info["summary"]["gap_line"]["median"] == pytest.approx(float(np.median(expected)), rel=1e-3)
    assert stats.quantiles["gap_rel"][49] == pytest.approx(1.0)  # one gap size per line
    assert stats.info["credit"] == "test credit"
    out = tmp_path / "stats.json"
    from htr_augment.line_stats import main
    assert main(["--lines", str(tmp_path / "lines.lmdb"), "--words", str(tmp_path / "words.lmdb"),
                 "--out", str(out)]) == 0
    assert LineStats.load(out).quantiles == json.loads(stats.to_json())["quantiles"]


def test_bad_corpus_lines_are_counted_and_named(tmp_path, ckpt, caplog):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("le chat\n\nla MAISON\n   \nune rue\n", encoding="utf-8")
    c = load_corpus(corpus, ALPHABET)
    assert c.texts == ["le chat", "une rue"] and c.sources == [f"{corpus}:1", f"{corpus}:5"]
    assert [(r[0], r[1]) for r in c.rejects] == [(f"{corpus}:2", "empty line"),
                                                 (f"{corpus}:3", "character outside the alphabet"),
                                                 (f"{corpus}:4", "empty line")]
    assert "'M' (U+004D)" in c.rejects[1][2] and f"{corpus}:3" in caplog.text and "rejected 3" in caplog.text
    ds = SyntheticLineDataset(ckpt, corpus, height=32)
    assert len(ds) == 2 and len(ds.corpus.rejects) == 3
    with pytest.raises(ValueError, match="no line of the corpus"):
        load_corpus(["", "XYZ"], ALPHABET)
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\n")
    with pytest.raises(ValueError, match="bad.txt:2"):
        load_corpus(tmp_path / "bad.txt")


# -- exports, each re-read by a reader written from the format's documentation ---------------

def read_kraken(folder: Path) -> list[tuple[np.ndarray, str]]:
    """Kraken's `ketos train -f path`: each line image X.png has its text in X.gt.txt."""
    out = []
    for name in (folder / "manifest.txt").read_text(encoding="utf-8").split():
        image = folder / name
        text = image.with_name(image.name.split(".")[0] + ".gt.txt").read_text(encoding="utf-8").strip("\r\n")
        out.append((cv2.imread(str(image), cv2.IMREAD_GRAYSCALE), text))
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(
        (folder / "manifest.txt").read_text(encoding="utf-8").split())
    return out


def read_pylaia(folder: Path, table: str) -> list[tuple[np.ndarray, str]]:
    """PyLaia: syms.txt maps `symbol id` (<ctc> is 0); a table line is `ID tok tok ...` with
    <space> for the space; the image is IMG_DIR/ID.<ext>."""
    syms = {}
    for line in (folder / "syms.txt").read_text(encoding="utf-8").splitlines():
        sym, idx = line.split()
        syms[sym] = int(idx)
    assert syms["<ctc>"] == 0 and "<space>" in syms and sorted(syms.values()) == list(range(len(syms)))
    out = []
    for line in (folder / table).read_text(encoding="utf-8").splitlines():
        ident, *tokens = line.split(" ")
        assert all(t in syms for t in tokens), line
        text = "".join(" " if t == "<space>" else t for t in tokens)
        out.append((cv2.imread(str(folder / "images" / f"{ident}.png"), cv2.IMREAD_GRAYSCALE), text))
    return out


def _cli(ckpt, *args):
    return subprocess.run([sys.executable, "-m", "htr_augment.gan.export_lmdb", "--checkpoint", str(ckpt),
                           "--no-progress", *map(str, args)], capture_output=True, text=True, cwd=REPO)


@pytest.mark.parametrize("fmt", ["lmdb", "kraken", "pylaia"])
def test_line_exports_are_read_back_and_resume(tmp_path, ckpt, fmt):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS * 4) + "\n\nle ZOO\n", encoding="utf-8")
    full = tmp_path / f"full_{fmt}"
    r = _cli(ckpt, "--lines", "--corpus", corpus, "--format", fmt, "--height", 40, "--out", full, "--val-every", 4)
    assert r.returncode == 0, r.stderr
    assert "rejected 2" in r.stderr and (tmp_path / f"full_{fmt}.rejects.tsv").read_text().count("corpus.txt:") == 2
    if fmt == "lmdb":
        samples = [(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE), t) for b, t in read_standard(full)]
    elif fmt == "kraken":
        samples = read_kraken(full)
    else:
        samples = read_pylaia(full, "gt.txt")
        train, val = read_pylaia(full, "train.txt"), read_pylaia(full, "val.txt")
        assert len(val) == len(samples) // 4 and [t for _, t in train + val] != [] \
            and sorted(t for _, t in train + val) == sorted(t for _, t in samples)
        ids = (full / "val_ids.txt").read_text().split()
        assert all((full / "images" / f"{i}.png").is_file() for i in ids)
    assert [t for _, t in samples] == TEXTS * 4
    ds = SyntheticLineDataset(ckpt, TEXTS * 4, height=40)
    for k, (img, text) in enumerate(samples):
        assert img is not None and img.shape == (40, ds[k].image.shape[-1])
        assert np.abs(img.astype(int) - to_uint8(ds[k].image).astype(int)).max() <= 3
    assert not Path(f"{full}.partial").exists()

    # interrupted after the first commit, then resumed: the same files
    from htr_augment.gan.export_lmdb import export
    part = tmp_path / f"part_{fmt}"

    class Stop(Exception):
        pass

    crashing = SyntheticLineDataset(ckpt, corpus, height=40, chunk_size=1)  # commits every 16 lines
    orig = SyntheticLineDataset.__getitem__
    crashing.__class__ = type("Crashing", (SyntheticLineDataset,), {
        "__getitem__": lambda self, i: (_ for _ in ()).throw(Stop) if i == 18 else orig(self, i)})
    source = {"corpus": str(corpus), "lines": True, "source": "gan", "checkpoint": str(ckpt), "stats": "None"}
    with pytest.raises(Stop):
        export(crashing, len(crashing), str(part), progress=False, source=source, fmt=fmt, val_every=4)
    assert Path(f"{part}.partial").is_dir() and not part.exists()
    if fmt != "lmdb":  # 16 lines committed before the crash; the resume starts there
        assert json.loads((Path(f"{part}.partial") / ".export-state.json").read_text())["count"] == 16
    r = _cli(ckpt, "--lines", "--corpus", corpus, "--format", fmt, "--height", 40, "--out", part, "--val-every", 4,
             "--resume")
    assert r.returncode == 0, r.stderr
    # The same labels and files; the same images up to float rounding (the crashing export wrote
    # its lines one by one, the full one in batches, and with one thread the kernels differ).
    if fmt == "lmdb":
        a, b = read_standard(part), read_standard(full)
        assert [t for _, t in a] == [t for _, t in b]
        assert all(same_png(x, y) for (x, _), (y, _) in zip(a, b))
    else:
        names = sorted(p.relative_to(full).as_posix() for p in full.rglob("*") if p.is_file() and p.name != "meta.json")
        assert names == sorted(p.relative_to(part).as_posix() for p in part.rglob("*")
                               if p.is_file() and p.name != "meta.json")
        for name in names:
            x, y = (full / name).read_bytes(), (part / name).read_bytes()
            assert same_png(x, y) if name.endswith(".png") else x == y, name
    r = _cli(ckpt, "--lines", "--corpus", corpus, "--format", fmt, "--out", part)
    assert r.returncode == 2 and "already exists" in r.stderr


def same_png(a: bytes, b: bytes) -> bool:
    x, y = (cv2.imdecode(np.frombuffer(v, np.uint8), cv2.IMREAD_GRAYSCALE) for v in (a, b))
    return x.shape == y.shape and int(np.abs(x.astype(int) - y.astype(int)).max()) <= 2


def test_font_lines_export_uses_the_generator_alphabet(tmp_path, ckpt):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("le chat\nLE CHAT\n", encoding="utf-8")
    r = _cli(ckpt, "--lines", "--corpus", corpus, "--source", "fonts", "--format", "kraken", "--out", tmp_path / "k")
    assert r.returncode == 0, r.stderr
    assert [t for _, t in read_kraken(tmp_path / "k")] == ["le chat"] and "corpus.txt:2" in r.stderr


def test_line_style_temperature_scales_the_line_s_style(ckpt):
    a = SyntheticLineDataset(ckpt, TEXTS, height=32, seed=4)
    b = SyntheticLineDataset(ckpt, TEXTS, height=32, seed=4, style_temperature=2.0)
    (ta, za, la), (tb, zb, lb) = a.plan(1), b.plan(1)
    assert ta == tb and la == lb and torch.allclose(zb, 2 * za, atol=1e-5)  # the fixture's prior is N(0, I)


def test_lines_take_the_weights_line_style_temperature_words_their_own(tmp_path):
    from htr_augment import SyntheticWordDataset
    from htr_augment.gan.export import main as export_main
    src = tiny_generator_checkpoint(tmp_path / "src.pt", extra={"style_temperature": 1.5})
    assert SyntheticLineDataset(src, TEXTS, height=32).style_temperature == 1.5  # none stored: the words' one
    assert export_main([str(src), "--out", str(tmp_path / "g.pt"), "--line-style-temperature", "1.0"]) == 0
    lines = SyntheticLineDataset(tmp_path / "g.pt", TEXTS, height=32, seed=4)
    assert lines.style_temperature == 1.0
    assert SyntheticWordDataset(tmp_path / "g.pt", ["chat"], length=2).style_temperature == 1.5
    assert SyntheticLineDataset(tmp_path / "g.pt", TEXTS, height=32, style_temperature=2.0).style_temperature == 2.0
    a, b = lines.plan(1), SyntheticLineDataset(src, TEXTS, height=32, seed=4).plan(1)
    assert torch.allclose(b[1], 1.5 * a[1], atol=1e-5)  # the fixture's prior is N(0, I)
    assert export_main([str(src), "--out", str(tmp_path / "x.pt"), "--line-style-temperature", "-1"]) == 1
    assert not (tmp_path / "x.pt").exists()
