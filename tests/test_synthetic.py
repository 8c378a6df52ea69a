import random
import subprocess
import sys

import lmdb
import pytest
import torch
from torch.utils.data import DataLoader

from htr_augment import CTCCollate, LmdbWordDataset, MixedDataset, MixingBatchSampler, SyntheticWordDataset
from htr_augment.lexicon import NgramSampler, load_lexicon

from .conftest import write_gt
from .fixtures_gan import ALPHABET, tiny_generator_checkpoint

WORDS = ["maison", "chat", "été", "porte", "rue", "ville", "lac", "pré"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_generator_checkpoint(tmp_path_factory.mktemp("g") / "g.pt")


def test_items_are_deterministic_whatever_the_access_order(ckpt):
    a = SyntheticWordDataset(ckpt, WORDS, length=40, seed=3, height=48, chunk_size=8)
    b = SyntheticWordDataset(ckpt, WORDS, length=40, seed=3, height=48, chunk_size=5)
    for i in (17, 0, 39, 17):
        sa, sb = a[i], b[i]
        assert sa.text == sb.text and sa.writer == sb.writer == f"synthetic:3:{i}"
        assert torch.allclose(sa.image, sb.image, atol=1e-5)
    s = a[0]
    assert s.image.shape[:2] == (1, 48) and s.image.dtype == torch.float32
    assert 0 <= float(s.image.min()) and float(s.image.max()) <= 1 and s.text in WORDS
    c = SyntheticWordDataset(ckpt, WORDS, length=40, seed=4, height=48)
    assert any(c[i].text != a[i].text or c[i].image.shape != a[i].image.shape
               or not torch.equal(c[i].image, a[i].image) for i in range(5))
    with pytest.raises(IndexError):
        a[40]


def test_same_items_from_two_workers(ckpt):
    ds = SyntheticWordDataset(ckpt, WORDS, length=24, seed=1, height=32, chunk_size=6)
    collate = CTCCollate(ALPHABET)
    loader = DataLoader(ds, batch_size=6, num_workers=2, collate_fn=collate)
    batches = list(loader)
    texts = [t for b in batches for t in b["texts"]]
    assert texts == [ds[i].text for i in range(24)]
    first = collate([ds[i] for i in range(6)])
    assert torch.allclose(batches[0]["images"], first["images"], atol=1e-5)


def test_resample_draws_new_words_once_a_chunk_is_served(ckpt):
    ds = SyntheticWordDataset(ckpt, WORDS, length=8, seed=0, chunk_size=8, resample=True)
    first = [ds[i] for i in range(8)]
    second = [ds[i] for i in range(8)]
    assert any(a.text != b.text or a.image.shape != b.image.shape or not torch.equal(a.image, b.image)
               for a, b in zip(first, second))


def test_lexicon_sources_and_alphabet_filter(ckpt, tmp_path, caplog):
    (tmp_path / "w.txt").write_text("chat\nQuébec\n\nrue\n", encoding="utf-8")
    assert load_lexicon(tmp_path / "w.txt") == ["chat", "Québec", "rue"]
    ds = SyntheticWordDataset(ckpt, tmp_path / "w.txt", length=4)
    assert ds.words == ["chat", "rue"] and sum(ds.dropped.values()) == 1  # 'Q' is not in the alphabet
    assert "dropped 1 of 3 words" in caplog.text
    gt = write_gt(tmp_path / "src", ["lac", "pré"])
    from htr_augment.data.build_lmdb import BuildOptions, build
    from htr_augment.data.sources import read_gt
    build(read_gt(gt), tmp_path / "l.lmdb", BuildOptions(), inputs=["x"], progress=False)
    assert load_lexicon(tmp_path / "l.lmdb") == ["lac", "pré"]
    with pytest.raises(ValueError, match="no word of the lexicon"):
        SyntheticWordDataset(ckpt, ["QWERTY"], length=4)
    with pytest.raises(FileNotFoundError):
        load_lexicon(tmp_path / "nope.txt")


def trainer_mix_inputs(tmp_path, *cli):
    """A 4-word real LMDB, the recognizer trainer's parsed synthetic options (its own parser, so
    every option has its CLI default) and what mix_synthetic takes beside them."""
    from htr_augment.alphabet import Alphabet
    from htr_augment.data.build_lmdb import BuildOptions, build
    from htr_augment.data.sources import read_gt
    from recognizer.train import parse_args
    gt = write_gt(tmp_path / "src", ["rue", "chat", "rue", "rue"], height=32)
    build(read_gt(gt), tmp_path / "r.lmdb", BuildOptions(height=32), inputs=["x"], progress=False)
    args = parse_args(["--config", "unused.toml", "--train", str(tmp_path / "r.lmdb"), "--out", str(tmp_path / "run"),
                       "--synthetic-ratio", "0.5", *map(str, cli)])
    config = {"train": {"seed": 0, "batch_size": 4}, "data": {"height": 32}}
    return LmdbWordDataset(tmp_path / "r.lmdb", height=32), config, Alphabet(list("abcdefghijklmnopqrstuvwxyz")), args


def test_lexicon_weight_type_or_token_and_the_trainers_legibility_filter(ckpt, tmp_path):
    from htr_augment.lexicon import label_words, weigh_words
    from recognizer.train import mix_synthetic
    labels = ["de la rue", "de chat", "la rue de"]
    assert label_words(labels) == ["de", "la", "rue", "de", "chat", "la", "rue", "de"]
    assert weigh_words(label_words(labels)) == ["chat", "de", "la", "rue"]
    assert weigh_words(label_words(labels), "token") == label_words(labels)
    with pytest.raises(ValueError, match="type, token"):
        weigh_words(labels, "zipf")
    # The recognizer's trainer: the training labels' words, by type (default) or by token.
    real, config, alphabet, args = trainer_mix_inputs(tmp_path, "--generator", ckpt, "--synthetic-length", 8)
    for weight, expected in (("type", ["chat", "rue"]), ("token", ["rue", "chat", "rue", "rue"])):
        args.synthetic_lexicon_weight = weight
        mixed, _ = mix_synthetic(config, real, alphabet, args)
        assert mixed.synthetic.words == expected and mixed.synthetic.reader is None
    # --synthetic-legible-by reaches the dataset's legibility filter.
    from .test_gan_quality import tiny_reader_checkpoint
    reader = tiny_reader_checkpoint(tmp_path / "reader.pt")
    args.synthetic_legible_by, args.synthetic_legible_tries = str(reader), 3
    mixed, _ = mix_synthetic(config, real, alphabet, args)
    assert mixed.synthetic.reader.path == reader and mixed.synthetic.tries == 3


def test_the_trainer_mixes_fonts_or_gan_and_fonts_interleaved(ckpt, tmp_path):
    from htr_augment import FontWordDataset, InterleavedDataset
    from recognizer.train import mix_synthetic
    real, config, alphabet, args = trainer_mix_inputs(tmp_path, "--generator", ckpt, "--synthetic-length", 7,
                                                      "--synthetic-source", "gan+fonts")
    mixed, sampler = mix_synthetic(config, real, alphabet, args)
    synth = mixed.synthetic
    assert isinstance(synth, InterleavedDataset) and len(synth) == 8  # 4 of each, at least the length asked
    writers = [synth[i].writer for i in range(len(synth))]
    assert all(w.startswith("synthetic:") for w in writers[0::2]), writers  # even: the GAN
    assert all(w.startswith("font:") for w in writers[1::2]), writers       # odd: the fonts
    assert {synth[i].text for i in range(len(synth))} <= {"chat", "rue"}
    for batch in sampler:  # half of every batch of 4 is synthetic: one word from each source
        kinds = sorted(mixed[i].writer.split(":")[0] for i in batch if i >= len(real))
        assert kinds == ["font", "synthetic"], batch
    # Fonts alone need no generator; a --generator without a GAN source is a mistake, said so.
    args.synthetic_source, args.generator = "fonts", None
    mixed, _ = mix_synthetic(config, real, alphabet, args)
    assert isinstance(mixed.synthetic, FontWordDataset) and len(mixed.synthetic) == 7
    args.generator = str(ckpt)
    with pytest.raises(ValueError, match="--generator is for a GAN source"):
        mix_synthetic(config, real, alphabet, args)


def test_ngram_sampler_makes_new_words_of_the_language():
    words = ["maison", "raison", "saison", "poison", "prison", "frisson", "chanson", "garçon"] * 3
    s = NgramSampler(words, n=3, min_length=3, max_length=9)
    rng = random.Random(0)
    out = [s.sample(rng) for _ in range(200)]
    assert all(3 <= len(w) <= 9 for w in out)
    assert all(set(w) <= set("".join(words)) for w in out)
    assert set(out) - set(words), "an n-gram sampler should also produce unseen words"
    assert [s.sample(random.Random(5)) for _ in range(3)] == [s.sample(random.Random(5)) for _ in range(3)]


class Fake(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


@pytest.mark.parametrize("ratio,world", [(0.5, 1), (0.25, 2), (0.0, 1)])
def test_mixing_sampler_ratio_and_epoch_by_real_data(ratio, world):
    mixed = MixedDataset(Fake(103), Fake(500))
    seen_real = []
    for rank in range(world):
        s = MixingBatchSampler(mixed, batch_size=8, ratio=ratio, seed=2, rank=rank, world_size=world, chunk_size=16)
        s.set_epoch(1)
        batches = list(s)
        assert len(batches) == len(s)
        real = [i for b in batches for i in b if i < 103]
        syn = [i for b in batches for i in b if i >= 103]
        for b in batches[:-1]:
            assert sum(i >= 103 for i in b) == round(ratio * 8) and len(b) == 8
        assert len(real) == len(set(real)) == 103 // world  # one pass over this rank's share
        seen_real += real
        if syn:  # read in whole chunks of consecutive indices: one generator pass per chunk
            chunks = [(i - 103) // 16 for i in syn]
            runs = [c for k, c in enumerate(chunks) if k == 0 or c != chunks[k - 1]]
            assert len(runs) == len(set(runs)) <= len(syn) // 16 + 2
    assert len(set(seen_real)) == len(seen_real)  # ranks disjoint
    s = MixingBatchSampler(mixed, batch_size=8, ratio=ratio, seed=2, rank=0, world_size=1)
    s.set_epoch(1)
    first = list(s)
    s.set_epoch(2)
    assert list(s) != first
    with pytest.raises(ValueError, match="ratio"):
        MixingBatchSampler(mixed, batch_size=8, ratio=1.0)


def test_mixed_loader_yields_real_and_synthetic(ckpt, tmp_path):
    gt = write_gt(tmp_path / "src", WORDS, height=32)
    from htr_augment.data.build_lmdb import BuildOptions, build
    from htr_augment.data.sources import read_gt
    build(read_gt(gt), tmp_path / "r.lmdb", BuildOptions(height=32), inputs=["x"], progress=False)
    real = LmdbWordDataset(tmp_path / "r.lmdb", alphabet=ALPHABET)
    synth = SyntheticWordDataset(ckpt, WORDS, length=64, height=32)
    mixed = MixedDataset(real, synth)
    loader = DataLoader(mixed, batch_sampler=MixingBatchSampler(mixed, 4, 0.5, seed=0), collate_fn=CTCCollate(ALPHABET))
    batch = next(iter(loader))
    assert sum(w.startswith("synthetic:") for w in batch["writers"]) == 2
    assert batch["images"].shape[:3] == (4, 1, 32)


def read_standard(path):
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        n = int(txn.get(b"num-samples"))
        out = [(txn.get(b"image-%09d" % i), txn.get(b"label-%09d" % i).decode()) for i in range(1, n + 1)]
    env.close()
    return out


def test_export_to_lmdb_resumes_to_the_same_result(ckpt, tmp_path):
    (tmp_path / "w.txt").write_text("\n".join(WORDS), encoding="utf-8")
    from htr_augment.gan.export_lmdb import export

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "htr_augment.gan.export_lmdb", "--lexicon", str(tmp_path / "w.txt"),
                               "--checkpoint", str(ckpt), "--no-progress", *map(str, args)], capture_output=True, text=True)
    r = cli("-n", 40, "--out", tmp_path / "full.lmdb")
    assert r.returncode == 0, r.stderr
    full = read_standard(tmp_path / "full.lmdb")
    assert len(full) == 40 and all(label in WORDS for _, label in full)

    class Stop(Exception):
        pass
    synth = SyntheticWordDataset(ckpt, WORDS, length=40, seed=0)
    orig = synth.__class__.__getitem__
    synth.__class__ = type("Crashing", (SyntheticWordDataset,), {
        "__getitem__": lambda self, i: (_ for _ in ()).throw(Stop) if i == 37 else orig(self, i)})
    source = {"lexicon": str(tmp_path / "w.txt"), "ngram": 0, "checkpoint": str(ckpt)}
    with pytest.raises(Stop):
        synth.chunk_size = 2  # commits every 32 words
        export(synth, 40, str(tmp_path / "part.lmdb"), progress=False, source=source)
    assert (tmp_path / "part.lmdb.partial").is_dir() and not (tmp_path / "part.lmdb").exists()
    r = cli("-n", 40, "--out", tmp_path / "part.lmdb", "--resume")
    assert r.returncode == 0, r.stderr
    assert [label for _, label in read_standard(tmp_path / "part.lmdb")] == [label for _, label in full]


def test_recognizer_trains_with_synthetic_ratio(ckpt, tmp_path):
    from htr_augment.data.build_lmdb import BuildOptions, build
    from htr_augment.data.sources import read_gt
    gt = write_gt(tmp_path / "src", WORDS * 4, height=32)
    build(read_gt(gt), tmp_path / "r.lmdb", BuildOptions(height=32), inputs=["x"], progress=False)
    from .conftest import REPO
    r = subprocess.run([sys.executable, "-m", "recognizer.train", "--config", str(REPO / "configs/recognizer/tiny.toml"),
                        "--train", str(tmp_path / "r.lmdb"), "--out", str(tmp_path / "run"), "--max-steps", "3",
                        "--num-workers", "0", "--no-progress", "--synthetic-ratio", "0.5", "--generator", str(ckpt),
                        "--device", "cpu"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "mixing 50% synthetic words" in r.stderr + (tmp_path / "run" / "train.log").read_text()
    assert (tmp_path / "run" / "last.pt").is_file()


def test_style_temperature_scales_the_prior_spread_around_its_mean(ckpt, tmp_path):
    from htr_augment.gan.word_generator import WordGenerator, fit_style_prior
    gen = WordGenerator.load(ckpt)
    gen.style_prior = tuple(torch.tensor(v) for v in (lambda p: (p["mean"], p["chol"]))(
        fit_style_prior(torch.randn(200, gen.z_dim) * 0.2 + 1.0)))
    eps = torch.randn(500, gen.z_dim, generator=torch.Generator().manual_seed(0))
    base, wide = gen.prior_style(eps), gen.prior_style(eps, 2.0)
    mean = gen.style_prior[0]
    assert torch.allclose(wide - mean, 2 * (base - mean), atol=1e-5)  # same draws, twice as far from the mean
    gen.style_temperature = 2.0
    assert torch.allclose(gen.sample_z(3, seed=1), gen.prior_style(torch.randn(
        3, gen.z_dim, generator=torch.Generator().manual_seed(1))), atol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        gen.prior_style(eps, 0.0)
    # The datasets take it too: the same item (text and draw) at another temperature differs only in style.
    a = SyntheticWordDataset(ckpt, WORDS, length=4, seed=0)
    b = SyntheticWordDataset(ckpt, WORDS, length=4, seed=0, style_temperature=3.0)
    (ta, za), (tb, zb) = a.text_and_style(1), b.text_and_style(1)
    assert ta == tb and torch.allclose(zb, 3 * za, atol=1e-5)  # the fixture's prior is N(0, I)
    with pytest.raises(ValueError, match="positive"):
        SyntheticWordDataset(ckpt, WORDS, length=4, style_temperature=-1.0)


class ScriptedReader:
    """Reads a word as its text from the `right_from`-th call on (0-based), as 'x' before."""

    def __init__(self, right_from: int):
        self.right_from, self.calls = right_from, []

    def __call__(self, images):
        self.calls.append(len(images))
        return ["x"] * len(images) if len(self.calls) <= self.right_from else None


def test_legible_by_writes_misread_words_again_in_other_styles_same_text(ckpt):
    plain = SyntheticWordDataset(ckpt, WORDS, length=6, seed=2, chunk_size=6)
    reader = ScriptedReader(right_from=2)
    reader_texts = [plain[i].text for i in range(6)]

    def read(images):  # wrong twice (the first style and the second), right from the third
        out = reader(images)
        return out if out is not None else reader_texts[:len(images)]
    filtered = SyntheticWordDataset(ckpt, WORDS, length=6, seed=2, chunk_size=6, legible_by=read, tries=4)
    items = [filtered[i] for i in range(6)]
    assert reader.calls == [6, 6, 6]  # first styles, 2nd and 3rd attempts; none left for a 4th
    third = SyntheticWordDataset(ckpt, WORDS, length=6, seed=2, chunk_size=6)
    plans = [third._draw(i, 0, attempt=2) for i in range(6)]
    texts, images = third._write(plans)
    assert [s.text for s in items] == [plain[i].text for i in range(6)] == texts  # the text never changes
    for s, want, first in zip(items, images, (plain[i] for i in range(6))):
        assert s.image.shape == want.shape and torch.allclose(s.image, want, atol=1e-5)
        assert s.image.shape != first.image.shape or not torch.equal(s.image, first.image)


def test_legible_by_keeps_the_style_read_best_when_none_is_right(ckpt):
    plain = SyntheticWordDataset(ckpt, WORDS, length=4, seed=5, chunk_size=4)
    texts = [plain[i].text for i in range(4)]
    calls = []

    def read(images):  # attempt 1 (the second style) is read closest: one character wrong
        calls.append(len(images))
        return [t[:-1] + "#" if len(calls) == 2 else "#" for t in texts[:len(images)]]
    ds = SyntheticWordDataset(ckpt, WORDS, length=4, seed=5, chunk_size=4, legible_by=read, tries=3)
    items = [ds[i] for i in range(4)]
    assert calls == [4, 4, 4]
    _, second = plain._write([plain._draw(i, 0, attempt=1) for i in range(4)])
    for s, want in zip(items, second):
        assert torch.allclose(s.image, want, atol=1e-5)
    with pytest.raises(ValueError, match="tries"):
        SyntheticWordDataset(ckpt, WORDS, length=4, legible_by=read, tries=0)
    with pytest.raises(ValueError, match="max_cer"):
        SyntheticWordDataset(ckpt, WORDS, length=4, legible_by=read, max_cer=1.0)
