"""Styles from real word images: WordGenerator(style=), SyntheticWordDataset(styles=), htr-generate --style."""
import cv2
import pytest
import torch
from torch.utils.data import DataLoader

from htr_augment import CTCCollate, LmdbWordDataset, SyntheticWordDataset
from htr_augment.gan.generate import main as generate_cli
from htr_augment.gan.word_generator import WordGenerator
from htr_augment.images import read_image, to_tensor

from .conftest import draw_word, write_gt
from .fixtures_gan import ALPHABET, tiny_generator_checkpoint

WORDS = ["maison", "chat", "été", "porte", "rue", "ville", "lac", "pré"]
STYLE_WORDS = ["lac", "maison", "rue", "porte", "été", "chat", "pré"]


@pytest.fixture(scope="module")
def styled_ckpt(tmp_path_factory):
    return tiny_generator_checkpoint(tmp_path_factory.mktemp("g") / "styled.pt", style_encoder=True)


@pytest.fixture(scope="module")
def plain_ckpt(tmp_path_factory):
    return tiny_generator_checkpoint(tmp_path_factory.mktemp("g") / "plain.pt")


@pytest.fixture(scope="module")
def gen(styled_ckpt):
    return WordGenerator.load(styled_ckpt)


@pytest.fixture(scope="module")
def styles_lmdb(tmp_path_factory):
    """A writer's own words: the real images styles are drawn from."""
    from htr_augment.data.build_lmdb import BuildOptions, build
    from htr_augment.data.sources import read_gt
    tmp = tmp_path_factory.mktemp("styles")
    gt = write_gt(tmp / "src", STYLE_WORDS, height=40)
    build(read_gt(gt), tmp / "w.lmdb", BuildOptions(height=40), inputs=["x"], progress=False)
    return tmp / "w.lmdb"


def word(text, **kw):
    return to_tensor(draw_word(text, **kw))


def same(a, b):
    return a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


def test_style_images_condition_the_output(gen):
    assert gen.has_style_encoder
    a, b = word("maison"), word("lac", height=48)
    first = gen.generate(["rue", "porte"], style=[a])
    assert all(torch.equal(x, y) for x, y in zip(first, gen.generate(["rue", "porte"], style=[a])))
    assert all(same(x, y) for x, y in zip(first, gen.generate(["rue", "porte"], style=[a, a])))
    assert all(same(x, y) for x, y in zip(first, gen.generate(["rue", "porte"], style=[a[0]])))  # (H, W)
    other = gen.generate(["rue", "porte"], style=[b])
    assert not any(same(x, y) for x, y in zip(first, other))


def test_style_is_the_mean_of_the_encoded_styles(gen):
    a, b = word("maison"), word("lac", height=48)
    styled = gen.generate(["chat", "ville"], style=[(a, "maison"), (b, "lac")], natural_width=False)
    z = gen.encode_styles([a, b], ["maison", "lac"])
    assert z.shape == (2, gen.z_dim)
    assert all(torch.equal(x, y) for x, y in zip(styled, gen.generate(["chat", "ville"], z=z.mean(0),
                                                                      natural_width=False)))
    with pytest.raises(ValueError, match="not both"):
        gen.generate(["chat"], style=[a], z=z[0])


def test_weights_without_style_encoder_say_so(plain_ckpt, styles_lmdb):
    old = WordGenerator.load(plain_ckpt)
    assert not old.has_style_encoder
    with pytest.raises(ValueError, match="no style encoder"):
        old.generate(["chat"], style=[word("lac")])
    with pytest.raises(ValueError, match=f"{plain_ckpt}.*no style encoder"):
        SyntheticWordDataset(plain_ckpt, WORDS, length=4, styles=styles_lmdb)


def test_dataset_styles_are_deterministic_and_are_the_real_words_styles(styled_ckpt, styles_lmdb, gen):
    a = SyntheticWordDataset(styled_ckpt, WORDS, length=30, seed=2, chunk_size=8, styles=styles_lmdb)
    real = LmdbWordDataset(styles_lmdb)
    b = SyntheticWordDataset(styled_ckpt, WORDS, length=30, seed=2, chunk_size=5, styles=real)
    for i in (17, 0, 29, 17, 3):
        assert a[i].text == b[i].text and a.style_of(i) == b.style_of(i) is not None
        assert same(a[i].image, b[i].image)
    # Item i is its text written in the style of the real word style_of(i).
    s, r = a[3], a.styles[a.style_of(3)]
    expected = gen.generate([s.text], z=gen.encode_styles([r.image], [r.text]))[0]
    assert same(s.image, expected)
    text, z = a.text_and_style(3)
    assert text == s.text and torch.allclose(z, gen.encode_styles([r.image], [r.text])[0], atol=1e-6)
    # Texts are drawn as without styles; the hands are not.
    plain = SyntheticWordDataset(styled_ckpt, WORDS, length=30, seed=2)
    assert [plain[i].text for i in range(30)] == [a[i].text for i in range(30)]
    assert not any(same(plain[i].image, a[i].image) for i in range(30))
    assert len({a.style_of(i) for i in range(30)}) > 1


def test_style_mix_keeps_prior_items_unchanged(styled_ckpt, styles_lmdb):
    mixed = SyntheticWordDataset(styled_ckpt, WORDS, length=40, seed=1, styles=styles_lmdb, style_mix=0.5)
    plain = SyntheticWordDataset(styled_ckpt, WORDS, length=40, seed=1)
    styled = [i for i in range(40) if mixed.style_of(i) is not None]
    assert 0 < len(styled) < 40
    for i in range(40):
        assert same(mixed[i].image, plain[i].image) == (i not in styled)
    with pytest.raises(ValueError, match="between 0 and 1"):
        SyntheticWordDataset(styled_ckpt, WORDS, length=4, styles=styles_lmdb, style_mix=1.5)
    with pytest.raises(ValueError, match="needs styles"):
        SyntheticWordDataset(styled_ckpt, WORDS, length=4, style_mix=0.5)
    with pytest.raises(FileNotFoundError, match="nope.lmdb"):
        SyntheticWordDataset(styled_ckpt, WORDS, length=4, styles=styles_lmdb.parent / "nope.lmdb")


def test_dataset_styles_same_from_two_workers(styled_ckpt, styles_lmdb):
    ds = SyntheticWordDataset(styled_ckpt, WORDS, length=24, seed=1, chunk_size=6, styles=styles_lmdb)
    collate = CTCCollate(ALPHABET)
    batches = list(DataLoader(ds, batch_size=6, num_workers=2, collate_fn=collate))
    assert [t for b in batches for t in b["texts"]] == [ds[i].text for i in range(24)]
    for k, batch in enumerate(batches):
        expected = collate([ds[i] for i in range(6 * k, 6 * k + 6)])
        assert torch.allclose(batch["images"], expected["images"], atol=1e-5)


def write_png(path, text):
    cv2.imwrite(str(path), draw_word(text, height=40))
    return str(path)


def test_cli_writes_in_the_hand_of_style_images(styled_ckpt, tmp_path):
    style = [write_png(tmp_path / "a.png", "maison"), write_png(tmp_path / "b.png", "lac")]
    out = tmp_path / "out.png"
    rc = generate_cli(["chat rue", "-c", str(styled_ckpt), "--style", style[0], "--style", style[1],
                       "--style-text", "maison", "--style-text", "lac", "-o", str(out)])
    assert rc == 0
    img = read_image(str(out))
    assert img.shape[0] == 32 + 2 * 8 and img.min() < 255  # one row, some ink
    rc = generate_cli(["chat", "-c", str(styled_ckpt), "--style", style[0], "-o", str(tmp_path / "one.png")])
    assert rc == 0 and (tmp_path / "one.png").is_file()


def test_cli_is_reproducible_from_its_seed(styled_ckpt, tmp_path):
    # styles *and* the words' layout come from --seed (the layout was once drawn unseeded)
    style = write_png(tmp_path / "a.png", "maison")

    def png(name: str, *extra: str) -> bytes:
        assert generate_cli(["chat rue mot", "-c", str(styled_ckpt), *extra, "-o", str(tmp_path / name)]) == 0
        return (tmp_path / name).read_bytes()

    assert png("a.png", "-n", "2") == png("b.png", "-n", "2") != png("c.png", "-n", "2", "--seed", "5")
    assert png("sa.png", "--style", style) == png("sb.png", "--style", style)


def test_cli_style_temperature_spreads_the_rows(styled_ckpt, tmp_path, capsys):
    rows = {}
    for t in ("1", "3"):
        out = tmp_path / f"t{t}.png"
        assert generate_cli(["chat", "-c", str(styled_ckpt), "-n", "3", "--style-temperature", t, "-o", str(out)]) == 0
        rows[t] = read_image(str(out)).astype(float)
    # Same draws, other styles (widths per character spread with them too).
    assert rows["1"].shape[0] == rows["3"].shape[0]
    assert rows["1"].shape != rows["3"].shape or abs(rows["1"] - rows["3"]).mean() > 0
    assert generate_cli(["chat", "-c", str(styled_ckpt), "--style-temperature", "0", "-o", str(tmp_path / "z.png")]) == 2
    assert "positive" in capsys.readouterr().err and not (tmp_path / "z.png").exists()
    with pytest.raises(SystemExit):
        generate_cli(["chat", "--style", "a.png", "--style-temperature", "2"])


def test_cli_style_errors_name_the_file(styled_ckpt, plain_ckpt, tmp_path, capsys):
    good = write_png(tmp_path / "a.png", "maison")
    missing = str(tmp_path / "missing.png")
    assert generate_cli(["chat", "-c", str(styled_ckpt), "--style", missing, "-o", str(tmp_path / "o.png")]) == 2
    assert f"{missing}: no such file" in capsys.readouterr().err
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert generate_cli(["chat", "-c", str(styled_ckpt), "--style", str(tmp_path / "bad.png")]) == 2
    assert f"{tmp_path / 'bad.png'}: not a decodable image" in capsys.readouterr().err
    assert generate_cli(["chat", "-c", str(plain_ckpt), "--style", good, "-o", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert str(plain_ckpt) in err and "no style encoder" in err
    assert not (tmp_path / "o.png").exists()
    with pytest.raises(SystemExit) as e:
        generate_cli(["chat", "--style", good, "--style-text", "a", "--style-text", "b"])
    assert e.value.code == 2 and "2 texts for 1 --style images" in capsys.readouterr().err


def test_writer_widths_are_measured_per_writer():
    from types import SimpleNamespace

    from htr_augment.gan.data import px_per_char, writer_px_per_char

    class Words(list):
        writers = ["a"] * 6 + ["b"] * 6 + ["c"] * 2
    # Writer a: 10 px per character, writer b: 20; c has too few words to count.
    ds = Words([SimpleNamespace(image=torch.zeros(1, 32, 10 * n), text="x" * n, writer="a") for n in (1, 2, 3, 1, 2, 3)]
               + [SimpleNamespace(image=torch.zeros(1, 32, 20 * n), text="x" * n, writer="b") for n in (1, 2, 3, 1, 2, 3)]
               + [SimpleNamespace(image=torch.zeros(1, 32, 90), text="x", writer="c")] * 2)
    assert writer_px_per_char(ds) == pytest.approx([10.0, 20.0])
    # The mean over every sampled word, writers with few words included, from the same pass.
    assert px_per_char(ds)[0] == pytest.approx((2 * 60 + 2 * 120 + 2 * 90) / (2 * 6 + 2 * 6 + 2))
    ds.writers = [""] * len(ds)
    assert writer_px_per_char(ds) == []  # no writer ids: nothing to measure


def test_each_style_writes_at_its_own_width_per_character(tmp_path):
    widths = [8.0, 9.0, 11.0, 14.0, 18.0]
    g = WordGenerator.load(tiny_generator_checkpoint(tmp_path / "w.pt", style_encoder=True,
                                                     extra={"writer_px_per_char": widths}))
    text = "maison"
    per_char = [g.generate([text], seed=s)[0].shape[-1] / len(text) for s in range(40)]
    # One style, one width: the same seed twice, and every word of one call.
    assert g.generate([text], seed=3)[0].shape == g.generate([text], seed=3)[0].shape
    assert len({im.shape[-1] / len(t) for im, t in
                zip(g.generate(["rue", "maison", "été"], seed=3), ["rue", "maison", "été"])}) == 1
    # Styles spread over the writers' range (within rounding), not one width for all.
    assert min(per_char) >= 8.0 - 0.2 and max(per_char) <= 18.0 + 0.2
    assert max(per_char) - min(per_char) > 4.0
    # Style images with their texts: the hand's own width per character.
    img = word("maison")  # drawn at 16 px per character at height 32
    out = g.generate(["lac"], style=[(img, "maison")])[0]
    assert out.shape[-1] == round(3 * img.shape[-1] * g.height / img.shape[-2] / 6)
    # Weights without stored widths keep the training words' mean width per character (11).
    plain = WordGenerator.load(tiny_generator_checkpoint(tmp_path / "p.pt"))
    assert {plain.generate([text], seed=s)[0].shape[-1] for s in range(5)} == {66}


def test_export_fills_in_writer_widths_for_older_checkpoints(tmp_path, styles_lmdb, capsys):
    from htr_augment.gan.export import export_generator
    from htr_augment.gan.export import main as export_main
    src = tiny_generator_checkpoint(tmp_path / "old.pt", style_encoder=True)
    assert WordGenerator.load(src).writer_widths is None
    export_generator(src, tmp_path / "g.pt", writer_widths=[9.0, 12.0, 15.0])
    assert WordGenerator.load(tmp_path / "g.pt").writer_widths.tolist() == [9.0, 12.0, 15.0]
    # Widths a checkpoint already has are kept.
    stored = tiny_generator_checkpoint(tmp_path / "new.pt", extra={"writer_px_per_char": [10.0, 11.0]})
    export_generator(stored, tmp_path / "g2.pt", writer_widths=[9.0, 12.0, 15.0])
    assert WordGenerator.load(tmp_path / "g2.pt").writer_widths.tolist() == [10.0, 11.0]
    # An LMDB without writer ids cannot give them: a clear error, nothing written.
    assert export_main([str(src), "--out", str(tmp_path / "g3.pt"), "--writer-widths-from", str(styles_lmdb)]) == 1
    assert "no writer ids" in capsys.readouterr().err and not (tmp_path / "g3.pt").exists()


def test_reexport_keeps_which_weights_and_changes_only_what_is_asked(tmp_path):
    """Exporting an exported file (e.g. the shipped live generator at another ink quantile) keeps its
    weights and their label ("generator": the live G), and sets only the new defaults."""
    from htr_augment.gan.export import export_generator
    src = tiny_generator_checkpoint(tmp_path / "live.pt", style_encoder=True, extra={"weights": "generator"})
    export_generator(src, tmp_path / "a.pt", style_temperature=1.5, ink_quantile=0.99)
    export_generator(tmp_path / "a.pt", tmp_path / "b.pt", ink_quantile=0.9)
    a, b = (torch.load(tmp_path / f, weights_only=True) for f in ("a.pt", "b.pt"))
    assert b["extra"]["weights"] == "generator" and b["extra"]["ink_quantile"] == 0.9
    assert b["extra"]["style_temperature"] == 1.5 and b["extra"]["source_checkpoint"] == "a.pt"
    for name, state in a["models"].items():
        assert all(torch.equal(v, b["models"][name][k]) for k, v in state.items())
    # A training checkpoint's EMA export is labelled by the slot it came from.
    export_generator(tiny_generator_checkpoint(tmp_path / "t.pt"), tmp_path / "c.pt")
    assert torch.load(tmp_path / "c.pt", weights_only=True)["extra"]["weights"] == "generator_ema"
