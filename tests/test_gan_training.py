"""The GAN trainer on a tiny set of drawn words: losses, balancing, resume, generation."""
import random

import pytest
import torch

from htr_augment.alphabet import AlphabetError
from htr_augment.data import LmdbWordDataset
from htr_augment.data.build_lmdb import BuildOptions, build
from htr_augment.data.sources import read_gt
from htr_augment.gan.config import load_gan_config
from htr_augment.gan.trainer import GanTrainer
from htr_augment.gan.word_generator import WordGenerator
from htr_augment.training import CheckpointError, DistInfo, load_checkpoint

from .conftest import REPO, write_gt

R_TINY = {"data": {"height": 32},
          "model": {"stem_channels": 8, "stages": [[1, 16], [1, 32]], "pools": [[2, 1]],
                    "lstm_hidden": 32, "lstm_layers": 1, "dropout": 0.0}}
CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def words_lmdb(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gan")
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdeh") for _ in range(rng.randint(2, 5))) for _ in range(48)]
    gt = write_gt(tmp / "src", words, height=32, px_per_char=16)
    build(read_gt(gt), tmp / "w.lmdb", BuildOptions(height=32), inputs=["drawn"], progress=False)
    return tmp / "w.lmdb"


def make_trainer(words_lmdb, out, **train):
    config = load_gan_config(REPO / "configs" / "gan" / "tiny.toml")
    config["train"].update(train)
    ds = LmdbWordDataset(words_lmdb, height=32)
    from recognizer.config import make_config
    return GanTrainer(config, make_config(R_TINY), ds, ds.alphabet, out, CPU, progress=False)


def make_trainer_with(words_lmdb, out, sections: dict, lexicon=None, **train):
    """make_trainer with other config sections changed too."""
    tr_config = load_gan_config(REPO / "configs" / "gan" / "tiny.toml")
    for name, values in sections.items():
        tr_config[name].update(values)
    tr_config["train"].update(train)
    ds = LmdbWordDataset(words_lmdb, height=32)
    from recognizer.config import make_config
    return GanTrainer(tr_config, make_config(R_TINY), ds, ds.alphabet, out, CPU, lexicon=lexicon, progress=False)


def test_recognizer_gets_no_gradient_from_generated_images(words_lmdb, tmp_path):
    tr = make_trainer(words_lmdb, tmp_path, g_every=1)
    real = next(iter(torch.utils.data.DataLoader(tr.dataset, batch_size=8, collate_fn=tr.collate)))
    r_before = {k: v.clone() for k, v in tr.R.state_dict().items()}
    seen = []
    orig_step = tr.opt_r.step

    def spy():
        seen.append([p.grad.clone() if p.grad is not None else None for p in tr.R.parameters()])
        orig_step()
    tr.opt_r.step = spy
    stats = tr.train_step(real)
    # R stepped once, on real images; after G's step its gradients were left untouched.
    assert len(seen) == 1
    assert all(p.grad is None or torch.equal(p.grad, g) for p, g in zip(tr.R.parameters(), seen[0]))
    assert any(not torch.equal(r_before[k], v) for k, v in tr.R.state_dict().items())
    # First step: the running stds are this batch's; in Alonso's terms the CTC weight is their ratio.
    assert stats["balance/ctc_weight"] == pytest.approx(
        stats["balance/std_grad_adv"] / stats["balance/std_grad_ctc"], rel=1e-3)
    assert {"loss/g_rec", "loss/g_info", "loss/e_kl"} <= set(stats)


def test_game_schedule_pretrains_then_freezes_r_and_steps_g_every_kth(words_lmdb, tmp_path):
    tr = make_trainer_with(words_lmdb, tmp_path, {"recognizer": {"pretrain_steps": 3, "frozen": True}}, g_every=2)
    batches = torch.utils.data.DataLoader(tr.dataset, batch_size=8, collate_fn=tr.collate)
    keys = []
    for real in list(batches)[:6]:
        r = {k: v.clone() for k, v in tr.R.state_dict().items()}
        d = {k: v.clone() for k, v in tr.D.state_dict().items()}
        stats = tr.train_step(real)
        tr.step += 1
        r_moved = any(not torch.equal(r[k], v) for k, v in tr.R.state_dict().items())
        d_moved = any(not torch.equal(d[k], v) for k, v in tr.D.state_dict().items())
        keys.append((r_moved, d_moved, "loss/g_adv" in stats))
    # 3 iterations of R alone; then D every iteration, R frozen, G every 2nd iteration.
    assert keys == [(True, False, False)] * 3 + [(False, True, True), (False, True, False), (False, True, True)]
    assert tr.g_steps == 2


def test_generator_reconstructs_a_real_word_from_its_style(words_lmdb, tmp_path):
    torch.manual_seed(0)
    tr = make_trainer(words_lmdb, tmp_path, g_every=1, w_adv=0.0, alpha=0.0, w_info=0.0, lr_g=2e-3)
    real = next(iter(torch.utils.data.DataLoader(tr.dataset, batch_size=8, collate_fn=tr.collate)))
    x, w = real["images"] * 2 - 1, real["widths"]
    history = [float(tr.g_step(x, w, real, [])[0]["loss/g_rec"].detach()) for _ in range(40)]
    # G(E(x), text(x)) ~ x: the masked L1 falls well below where it starts, and below the
    # L1 of writing nothing at all (a blank word).
    blank = float((x.clamp(max=-1.0) - x).abs().sum() / (w.sum() * x.shape[2]))
    assert history[-1] < 0.6 * history[0] and history[-1] < blank, (history[::8], blank)


def test_generator_learns_to_write_what_the_recognizer_reads(words_lmdb, tmp_path):
    torch.manual_seed(0)
    tr = make_trainer(words_lmdb, tmp_path, alpha=2.0, g_every=1)
    # Train R alone on the real words, then freeze it and let G learn from it.
    loader = torch.utils.data.DataLoader(tr.dataset, batch_size=16, shuffle=True, collate_fn=tr.collate)
    from recognizer.losses import ctc_losses
    for _ in range(25):
        for real in loader:
            loss, _, _ = ctc_losses(tr.R(real["images"], real["widths"]), real["targets"], real["target_lengths"], 0.1)
            tr.opt_r.zero_grad()
            loss.backward()
            tr.opt_r.step()
    for g in tr.opt_r.param_groups:
        g["lr"] = 0.0
    history = []
    batches = iter(lambda: next(iter(loader)), None)
    for step in range(40):
        tr.step = step
        history.append(tr.train_step(next(batches))["loss/g_ctc"])
    first, last = sum(history[:5]) / 5, sum(history[-5:]) / 5
    assert last < 0.8 * first, history


def test_resume_continues_exactly(words_lmdb, tmp_path):
    a = make_trainer(words_lmdb, tmp_path / "a", checkpoint_every=3, sample_every=1000, keep_every=2)
    a.fit(6)
    assert sorted(p.name for p in (tmp_path / "a").glob("step*.pt")) == [
        "step0000002.pt", "step0000004.pt", "step0000006.pt"]
    b = make_trainer(words_lmdb, tmp_path / "b", checkpoint_every=3, sample_every=1000)
    b.fit(3)
    c = make_trainer(words_lmdb, tmp_path / "b", checkpoint_every=3, sample_every=1000)
    c.resume(tmp_path / "b" / "last.pt")
    assert c.step == 3
    c.fit(6)
    for name in ("G", "D", "R", "E"):
        for (k, va), vc in zip(getattr(a, name).state_dict().items(), getattr(c, name).state_dict().values()):
            assert torch.allclose(va.float(), vc.float(), atol=1e-6), (name, k)
    ckpt = load_checkpoint(tmp_path / "a" / "last.pt", kind="gan")
    assert set(ckpt["models"]) == {"generator", "generator_ema", "discriminator", "recognizer", "style_encoder",
                                   "style_encoder_ema"}
    assert ckpt["extra"]["g_steps"] == a.g_steps == 1 and ckpt["extra"]["balancer"]["std"]
    assert ckpt["step"] == 6 and ckpt["alphabet"] == a.alphabet.chars
    kept = load_checkpoint(tmp_path / "a" / "step0000004.pt", kind="gan")
    assert kept["step"] == 4


def test_resume_at_another_batch_size_rescales_the_balancer_s_running_stds(words_lmdb, tmp_path):
    torch.manual_seed(0)
    big = make_trainer(words_lmdb, tmp_path, batch_size=16, g_every=1, checkpoint_every=2, sample_every=1000)
    big.fit(2)
    saved = dict(big.balancer.std)
    assert saved
    small = make_trainer(words_lmdb, tmp_path, batch_size=4, g_every=1, checkpoint_every=1000, sample_every=1000)
    small.resume(tmp_path / "last.pt")
    # a mean over the batch: the image gradients' std is 4 times larger at a quarter of the batch
    assert small.balancer.std == pytest.approx({k: 4 * v for k, v in saved.items()})
    real = small.collate([small.dataset[i] for i in range(4)])
    small.step = 3
    _, stats = small.g_step(real["images"] * 2 - 1, real["widths"], real, [])
    for k in saved:  # the rescaled running std matches what batch 4 actually measures (within noise)
        assert 0.25 < stats[f"std_grad_{k}"] / small.balancer.std[k] < 4, k
    same = make_trainer(words_lmdb, tmp_path, batch_size=16, checkpoint_every=1000, sample_every=1000)
    same.resume(tmp_path / "last.pt")
    assert same.balancer.std == saved


def test_a_signal_stops_training_after_the_step_with_a_checkpoint(words_lmdb, tmp_path):
    import os
    import signal
    tr = make_trainer(words_lmdb, tmp_path, checkpoint_every=1000, sample_every=1000)
    step = tr.train_step

    def step_then_sigterm(real):  # as `kill -TERM` would, in the middle of the third iteration
        if tr.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(real)
    tr.train_step = step_then_sigterm
    before = signal.getsignal(signal.SIGTERM)
    tr.fit(40)
    assert tr.interrupted and tr.step == 3
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
    assert load_checkpoint(tmp_path / "last.pt", kind="gan")["step"] == 3  # nothing since the last checkpoint lost
    again = make_trainer(words_lmdb, tmp_path, checkpoint_every=1000, sample_every=1000)
    again.resume(tmp_path / "last.pt")
    again.fit(5)
    assert not again.interrupted and again.step == 5


def test_a_time_limit_stops_training_after_the_step_with_a_checkpoint(words_lmdb, tmp_path, monkeypatch):
    from htr_augment.training import stop
    clock = [100.0]
    monkeypatch.setattr(stop.time, "monotonic", lambda: clock[0])
    tr = make_trainer(words_lmdb, tmp_path, checkpoint_every=1000, sample_every=1000)
    step = tr.train_step

    def one_second_steps(real):
        clock[0] += 1.0
        return step(real)
    tr.train_step = one_second_steps
    tr.fit(40, time_limit=2.5)
    assert tr.interrupted and tr.stop_reason == "time limit" and tr.step == 3
    assert load_checkpoint(tmp_path / "last.pt", kind="gan")["step"] == 3
    with pytest.raises(ValueError, match="positive"):
        stop.StopRequest(0)


def test_generation_is_deterministic_and_style_is_shared(words_lmdb, tmp_path):
    tr = make_trainer(words_lmdb, tmp_path, checkpoint_every=2, sample_every=1000)
    tr.fit(2)
    gen = WordGenerator.load(tmp_path / "last.pt")
    a = gen.generate(["abc", "de"], seed=7)
    b = gen.generate(["abc", "de"], seed=7)
    c = gen.generate(["abc", "de"], seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    z = gen.sample_z(1, seed=3)
    alone = gen.generate(["abc"], z=z)[0]
    together = gen.generate(["hd", "abc", "e"], z=z)[1]  # one style for the whole batch
    assert torch.allclose(alone, together, atol=1e-4)  # batch shape changes float summation order only
    assert alone.shape[1] == 32 and 0 <= float(alone.min()) and float(alone.max()) <= 1
    with pytest.raises(AlphabetError, match="'z'"):
        gen.generate(["xyz"])
    line = gen.generate_line("abc de", seed=1)
    assert line.shape[-1] > alone.shape[-1]


def test_exported_weights_write_the_same_words_and_carry_provenance(words_lmdb, tmp_path):
    from htr_augment.gan.export import main as export_main
    tr = make_trainer(words_lmdb, tmp_path, checkpoint_every=2, sample_every=1000)
    tr.fit(2)
    (tmp_path / "report.json").write_text('{"gan": {"cer": 0.5}}')
    assert export_main([str(tmp_path / "last.pt"), "--out", str(tmp_path / "g.pt"),
                        "--metrics", str(tmp_path / "report.json")]) == 0
    small = load_checkpoint(tmp_path / "g.pt", kind="gan")
    assert list(small["models"]) == ["generator_ema", "style_encoder_ema"] and not small["optimizers"]
    assert small["extra"]["metrics"] == {"gan": {"cer": 0.5}} and len(small["extra"]["source_sha256"]) == 64
    assert (tmp_path / "g.pt").stat().st_size < (tmp_path / "last.pt").stat().st_size / 2
    full, exported = WordGenerator.load(tmp_path / "last.pt"), WordGenerator.load(tmp_path / "g.pt")
    assert all(torch.equal(a, b) for a, b in zip(full.generate(["abc", "hd"], seed=1),
                                                  exported.generate(["abc", "hd"], seed=1)))
    assert export_main([str(tmp_path / "report.json"), "--out", str(tmp_path / "x.pt")]) == 1
    assert not (tmp_path / "x.pt").exists()


def test_exported_style_temperature_is_the_generator_s_default(words_lmdb, tmp_path):
    from htr_augment.gan.export import main as export_main
    from htr_augment.synthetic import SyntheticWordDataset
    tr = make_trainer(words_lmdb, tmp_path, checkpoint_every=2, sample_every=1000)
    tr.fit(2)
    assert export_main([str(tmp_path / "last.pt"), "--out", str(tmp_path / "g.pt"), "--style-temperature", "1.5"]) == 0
    full, exported = WordGenerator.load(tmp_path / "last.pt"), WordGenerator.load(tmp_path / "g.pt")
    assert full.style_temperature == 1.0 and exported.style_temperature == 1.5
    assert torch.allclose(exported.sample_z(4, seed=3), full.prior_style(
        torch.randn(4, full.z_dim, generator=torch.Generator().manual_seed(3)), 1.5), atol=1e-6)
    assert SyntheticWordDataset(tmp_path / "g.pt", ["abc"], length=2).style_temperature == 1.5
    assert SyntheticWordDataset(tmp_path / "g.pt", ["abc"], length=2, style_temperature=1.0).style_temperature == 1.0
    assert export_main([str(tmp_path / "last.pt"), "--out", str(tmp_path / "x.pt"), "--style-temperature", "0"]) == 1
    assert not (tmp_path / "x.pt").exists()


def test_exported_ink_quantile_darkens_every_word_to_full_ink(words_lmdb, tmp_path):
    from htr_augment.gan.export import main as export_main
    from htr_augment.images import stretch_ink
    tr = make_trainer(words_lmdb, tmp_path, checkpoint_every=2, sample_every=1000)
    tr.fit(2)
    assert export_main([str(tmp_path / "last.pt"), "--out", str(tmp_path / "g.pt"), "--ink-quantile", "0.99"]) == 0
    full, exported = WordGenerator.load(tmp_path / "last.pt"), WordGenerator.load(tmp_path / "g.pt")
    assert full.ink_quantile is None and exported.ink_quantile == 0.99
    plain, dark = full.generate(["abc", "hd"], seed=1), exported.generate(["abc", "hd"], seed=1)
    for p, d in zip(plain, dark):
        assert torch.allclose(d, stretch_ink(p, 0.99))
        assert float(torch.quantile(d.flatten(), 0.99)) == pytest.approx(1.0, abs=0.01)
        assert float(torch.quantile(p.flatten(), 0.99)) < 0.99  # the untrained G's words were not dark already
    # The stretch itself: the quantile becomes 1, order and background kept; a blank image unchanged.
    ink = torch.tensor([[[0.0, 0.1, 0.2, 0.4]]])
    assert torch.allclose(stretch_ink(ink, 1.0), torch.tensor([[[0.0, 0.25, 0.5, 1.0]]]))
    assert torch.equal(stretch_ink(torch.zeros(1, 4, 4), 0.99), torch.zeros(1, 4, 4))
    assert export_main([str(tmp_path / "last.pt"), "--out", str(tmp_path / "x.pt"), "--ink-quantile", "0.2"]) == 1
    assert not (tmp_path / "x.pt").exists()


def test_exported_ink_floor_and_margin_apply_after_the_stretch(words_lmdb, tmp_path):
    from htr_augment.gan.export import main as export_main
    from htr_augment.images import drop_faint_ink, stretch_ink
    tr = make_trainer(words_lmdb, tmp_path, checkpoint_every=2, sample_every=1000)
    tr.fit(2)
    args = [str(tmp_path / "last.pt"), "--ink-quantile", "0.99"]
    assert export_main([*args, "--out", str(tmp_path / "g.pt")]) == 0
    assert export_main([*args, "--ink-floor", "0.3", "--out", str(tmp_path / "f.pt")]) == 0
    plain, floored = WordGenerator.load(tmp_path / "g.pt"), WordGenerator.load(tmp_path / "f.pt")
    assert plain.ink_floor == 0 and floored.ink_floor == 0.3
    for p, f in zip(plain.generate(["abc", "hd"], seed=1), floored.generate(["abc", "hd"], seed=1)):
        assert torch.allclose(f, drop_faint_ink(p, 0.3))
        faint = (p > 0) & (p <= 0.3)
        assert faint.any() and (f[faint] == 0).all()  # the untrained G's haze is gone ...
        assert torch.equal(f[p >= 1], p[p >= 1])  # ... full ink stays full
    ink = torch.tensor([[[0.0, 0.2, 0.6, 1.0]]])
    assert torch.allclose(drop_faint_ink(ink, 0.2), torch.tensor([[[0.0, 0.0, 0.5, 1.0]]]))
    assert torch.equal(drop_faint_ink(stretch_ink(ink, 1.0), 0.0), ink)
    assert export_main([*args, "--ink-floor", "0.5", "--out", str(tmp_path / "x.pt")]) == 1
    assert not (tmp_path / "x.pt").exists()
    # A margin: background columns, a fraction of the height, on both sides of the same word.
    assert export_main([*args, "--margin", "0.25", "--out", str(tmp_path / "m.pt")]) == 0
    margined = WordGenerator.load(tmp_path / "m.pt")
    assert plain.margin == 0 and margined.margin == 0.25
    for p, m in zip(plain.generate(["abc", "hd"], seed=1), margined.generate(["abc", "hd"], seed=1)):
        pad = round(0.25 * p.shape[1])
        assert pad > 0 and m.shape[-1] == p.shape[-1] + 2 * pad
        assert torch.equal(m[..., pad:-pad], p) and not m[..., :pad].any() and not m[..., -pad:].any()
    assert export_main([*args, "--margin", "-0.1", "--out", str(tmp_path / "x.pt")]) == 1
    assert not (tmp_path / "x.pt").exists()


def test_export_live_takes_the_live_generator_not_the_ema(words_lmdb, tmp_path):
    from htr_augment.gan.export import main as export_main
    tr = make_trainer(words_lmdb, tmp_path, g_every=1, checkpoint_every=3, sample_every=1000)
    tr.fit(3)
    vec = torch.nn.utils.parameters_to_vector
    assert not torch.equal(vec(tr.G.parameters()), vec(tr.ema.model.parameters()))  # else the test proves nothing
    for flag, live in (([], False), (["--live"], True)):
        assert export_main([str(tmp_path / "last.pt"), "--out", str(tmp_path / "g.pt"), *flag]) == 0
        exported = WordGenerator.load(tmp_path / "g.pt")
        want = tr.G if live else tr.ema.model
        assert torch.equal(vec(exported.generator.parameters()), vec(want.parameters()).detach())
        assert exported.info["weights"] == ("generator" if live else "generator_ema")


def test_init_from_adds_char_style_to_a_trained_gan_and_the_new_run_resumes(words_lmdb, tmp_path):
    vec = torch.nn.utils.parameters_to_vector
    old = make_trainer(words_lmdb, tmp_path / "old", g_every=1, checkpoint_every=2, sample_every=1000)
    old.fit(2)
    sections = {"generator": {"char_style": True}}
    new = make_trainer_with(words_lmdb, tmp_path / "new", sections, g_every=1, checkpoint_every=4, sample_every=1000)
    new.resume(tmp_path / "old" / "last.pt", warm=True)
    assert new.step == 2 and float(new.G.char_film.weight.detach().abs().sum()) == 0
    for a, b in ((new.G, old.G), (new.ema.model, old.ema.model), (new.D, old.D)):
        kept = {k: v for k, v in a.state_dict().items() if not k.startswith("char_film.")}
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in kept.items())
    new.fit(4)
    assert float(new.G.char_film.weight.detach().abs().sum()) > 0  # the style now reaches the characters
    again = make_trainer_with(words_lmdb, tmp_path / "new", sections, g_every=1, sample_every=1000)
    again.resume(tmp_path / "new" / "last.pt")  # an ordinary run from here on
    assert again.step == 4 and torch.equal(vec(again.G.parameters()), vec(new.G.parameters()))
    fast = make_trainer_with(words_lmdb, tmp_path / "f", sections, g_every=1, lr_char_style=1e-2, sample_every=1000)
    assert [g["lr"] for g in fast.opt_g.param_groups] == [fast.config["train"]["lr_g"], 1e-2]
    with pytest.raises(CheckpointError, match="--init-from"):  # one group in the checkpoint, two here
        fast.resume(tmp_path / "new" / "last.pt")
    fast = make_trainer_with(words_lmdb, tmp_path / "f", sections, g_every=1, lr_char_style=1e-2, sample_every=1000)
    fast.resume(tmp_path / "new" / "last.pt", warm=True)
    before = fast.G.char_film.weight.detach().clone()
    fast.fit(5)
    assert fast.step == 5 and not torch.equal(before, fast.G.char_film.weight.detach())
    wider = make_trainer_with(words_lmdb, tmp_path / "w", {"generator": {"base": 12}})
    with pytest.raises(CheckpointError, match="do not fit this config"):
        wider.resume(tmp_path / "old" / "last.pt", warm=True)


def test_init_from_adds_minibatch_std_to_a_trained_discriminator(words_lmdb, tmp_path):
    old = make_trainer(words_lmdb, tmp_path / "old", g_every=1, checkpoint_every=2, sample_every=1000)
    old.fit(2)
    sections = {"discriminator": {"mbstd_group": 4}}
    new = make_trainer_with(words_lmdb, tmp_path / "new", sections, g_every=1, sample_every=1000)
    new.resume(tmp_path / "old" / "last.pt", warm=True)
    assert float(new.D.mbstd.weight.detach().abs().sum()) == 0
    kept = {k: v for k, v in new.D.state_dict().items() if not k.startswith("mbstd.")}
    assert all(torch.equal(v, old.D.state_dict()[k]) for k, v in kept.items())
    new.fit(4)
    assert float(new.D.mbstd.weight.detach().abs().sum()) > 0  # D learns from the batch's spread
    with pytest.raises(ValueError, match="mbstd_group 3 must divide half the batch"):  # 8 fakes: 4 in E styles, 4 prior
        make_trainer_with(words_lmdb, tmp_path / "bad", {"discriminator": {"mbstd_group": 3}})


def test_init_from_refuses_an_existing_run_and_resume_together(words_lmdb, tmp_path, capsys):
    from htr_augment.gan.train import main as train_main
    tr = make_trainer(words_lmdb, tmp_path / "a", checkpoint_every=1, sample_every=1000)
    tr.fit(1)
    base = ["--config", str(REPO / "configs" / "gan" / "tiny.toml"), "--train", str(words_lmdb), "--no-progress"]
    assert train_main(base + ["--out", str(tmp_path / "a"), "--init-from", str(tmp_path / "a" / "last.pt")]) == 2
    assert "exists; continue that run with --resume" in capsys.readouterr().err
    assert train_main(base + ["--out", str(tmp_path / "b"), "--init-from", str(tmp_path / "a" / "last.pt"),
                              "--resume"]) == 2
    assert "give one" in capsys.readouterr().err
    assert train_main(base + ["--out", str(tmp_path / "c"), "--time-limit", "0"]) == 2
    assert "--time-limit 0.0: give a positive number of seconds" in capsys.readouterr().err


def test_default_weights_warn_when_their_evaluation_says_illegible(words_lmdb, tmp_path, monkeypatch):
    import warnings

    from htr_augment.gan import word_generator
    from htr_augment.gan.export import export_generator
    tr = make_trainer(words_lmdb, tmp_path, checkpoint_every=1, sample_every=1000)
    tr.fit(1)
    for cer, warns in ((0.9, True), (0.1, False)):
        metrics = {"fidelity": {"gan": {"all": {"cer": cer}}}}
        export_generator(tmp_path / "last.pt", tmp_path / f"g{cer}.pt", metrics)
        monkeypatch.setattr(word_generator, "PACKAGE_WEIGHTS", tmp_path / f"g{cer}.pt")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            WordGenerator.load()
            WordGenerator.load(tmp_path / f"g{cer}.pt")  # an explicit checkpoint: the user chose it
        assert [("CER 0.90" in str(w.message)) for w in caught] == ([True] if warns else [])


def _gan_worker(rank, world, rendezvous, words_lmdb, out, train=None):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        from htr_augment.training import init_distributed
        info = init_distributed("cpu")
        config = load_gan_config(REPO / "configs" / "gan" / "tiny.toml")
        config["train"].update(checkpoint_every=3, sample_every=1000, log_every=1, **(train or {}))
        ds = LmdbWordDataset(words_lmdb, height=32)
        from recognizer.config import make_config
        tr = GanTrainer(config, make_config(R_TINY), ds, ds.alphabet, out, info, progress=False)
        tr.fit(3)
        vec = torch.nn.utils.parameters_to_vector
        torch.save({m: vec(getattr(tr, m).parameters()).detach() for m in ("G", "D", "R", "E", "W")
                    if getattr(tr, m) is not None}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_keep_identical_gan_weights(words_lmdb, tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_gan_worker, args=(2, str(tmp_path / "rdv"), str(words_lmdb), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    for m in ("G", "D", "R", "E"):
        assert torch.equal(r0[m], r1[m]), m
    ckpt = load_checkpoint(tmp_path / "last.pt", kind="gan")
    assert ckpt["step"] == 3 and len(ckpt["rng"]) == 2
    # 48 words, 2 ranks, batches of 8: 3 batches per rank per epoch.
    assert (ckpt["epoch"], ckpt["batch_in_epoch"]) == (0, 3)


def test_two_gloo_ranks_share_one_fixed_writer_classifier(two_writers_lmdb, tmp_path):
    # lr_w = 0: W is not wrapped in DDP, so its (seeded per rank) start is broadcast from rank 0
    import torch.multiprocessing as mp
    train = {"w_wid": 1.0, "wid_start": 0, "lr_w": 0.0, "g_every": 1}
    mp.spawn(_gan_worker, args=(2, str(tmp_path / "rdv"), str(two_writers_lmdb), str(tmp_path), train),
             nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    for m in ("G", "E", "W"):
        assert torch.equal(r0[m], r1[m]), m


def test_health_is_logged_plotted_and_guards_the_last_healthy_checkpoint(words_lmdb, tmp_path):
    from htr_augment.gan.health import auc
    from htr_augment.gan.health_plot import main as plot_main
    from htr_augment.training import read_metrics_csv
    assert auc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert auc(torch.tensor([0.0]), torch.tensor([1.0])) == 0.0 and auc(torch.ones(3), torch.ones(2)) == 0.5
    val = LmdbWordDataset(words_lmdb, height=32)
    tr = make_trainer_with(words_lmdb, tmp_path, {}, eval_every=2, eval_words=16, checkpoint_every=100,
                           sample_every=100, breakdown_cer=1.01, breakdown_vs_real=0.0)
    tr.val_dataset = val
    tr.fit(4)
    metrics = read_metrics_csv(tmp_path / "metrics.csv")
    for name in ("d_auc", "d_margin", "live_r_cer", "ema_r_cer", "live_peak_ink", "ema_peak_ink",
                 "live_z_diversity", "ema_z_diversity", "real_r_cer"):
        steps = [s for s, _ in metrics[f"health/{name}"]]
        assert steps == [2, 4], name
    assert 0.0 <= metrics["health/d_auc"][-1][1] <= 1.0
    assert (tmp_path / "healthy.pt").is_file()  # every R-CER is below 1.01
    assert load_checkpoint(tmp_path / "healthy.pt", kind="gan")["step"] == 4
    # A breakdown (R-CER above the limit) never overwrites the last healthy checkpoint.
    tr.config["train"]["breakdown_cer"] = 0.0
    tr.fit(6)
    assert load_checkpoint(tmp_path / "healthy.pt", kind="gan")["step"] == 4
    # Nor does a G that R reads worse than real words (breakdown_vs_real), though below breakdown_cer.
    tr.config["train"].update(breakdown_cer=0.8, breakdown_vs_real=1.0)
    bars = {"health/live_r_cer": 0.53, "health/ema_r_cer": 0.01, "health/real_r_cer": 0.27}
    assert not tr.healthy(bars) and tr.healthy({**bars, "health/live_r_cer": 0.05})
    assert tr.healthy({**bars, "health/live_r_cer": 0.27}) and not tr.healthy({**bars, "health/ema_r_cer": 0.81,
                                                                                "health/real_r_cer": 0.9})
    tr.config["train"]["breakdown_vs_real"] = 0.0
    assert tr.healthy(bars)  # the absolute bound alone
    assert plot_main([str(tmp_path), "--out", str(tmp_path / "h.png")]) == 0
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "empty").mkdir()
    assert plot_main([str(tmp_path / "empty")]) == 2


def test_fitted_style_prior_is_stored_trained_on_and_sampled(words_lmdb, tmp_path):
    tr = make_trainer_with(words_lmdb, tmp_path, {"style": {"fitted_prior": True}}, g_every=1, checkpoint_every=2,
                           sample_every=100)
    assert tr.fitted_prior is None  # N(0, I) until G has trained and a checkpoint refits it
    tr.fit(2)
    prior = load_checkpoint(tmp_path / "last.pt", kind="gan")["extra"]["style_prior"]
    assert tr.fitted_prior == prior and len(prior["mean"]) == tr.G.z_dim and prior["words"] == len(tr.dataset)
    mean, chol = torch.tensor(prior["mean"]), torch.tensor(prior["chol"])
    z = tr.prior_z(20000, torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), mean, atol=0.05)
    assert torch.allclose(torch.cov(z.T), chol @ chol.T, atol=0.05)
    # The codes it was fitted to: the EMA style encoder's of the training words.
    batch = tr.collate([tr.dataset[i] for i in range(len(tr.dataset))])
    codes, _ = tr.ema_e.model(batch["images"] * 2 - 1, batch["widths"])
    assert torch.allclose(codes.mean(0), mean, atol=1e-4)
    gen = WordGenerator.load(tmp_path / "last.pt")  # samples its default styles from the same Gaussian
    eps = torch.randn(3, tr.G.z_dim, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(gen.sample_z(3, seed=5), mean + eps @ chol.T, atol=1e-6)
    resumed = make_trainer_with(words_lmdb, tmp_path, {"style": {"fitted_prior": True}})
    resumed.resume(tmp_path / "last.pt")
    assert resumed.fitted_prior == prior


def live_diversity(tr, key: str = "z_diversity", n: int = 8, seed: int = 3) -> float:
    """The live G's mean masked pixel distance between the same texts in two prior styles
    ("z_diversity") or in one style with other letter noise ("noise_diversity")."""
    from htr_augment.gan.data import encode_texts
    from htr_augment.gan.health import generator_health
    texts = list(tr.dataset.texts[:n])
    tokens, lengths, _ = encode_texts(texts, tr.alphabet)
    gen = torch.Generator().manual_seed(seed)
    z, z2 = tr.prior_z(n, gen), tr.prior_z(n, gen)
    return generator_health(tr.G, tr.R, tr.alphabet, tokens, lengths, texts, z, z2)[key]


def test_mode_seeking_pushes_two_styles_of_one_text_apart(words_lmdb, tmp_path):
    torch.manual_seed(0)
    tr = make_trainer(words_lmdb, tmp_path, g_every=1, w_adv=0.0, alpha=0.0, w_rec=0.0, w_info=0.0, w_div=1.0,
                      lr_g=1e-3)
    real = next(iter(torch.utils.data.DataLoader(tr.dataset, batch_size=8, collate_fn=tr.collate)))
    before = live_diversity(tr)
    for step in range(10):
        tr.step = step
        losses, _ = tr.g_step(real["images"] * 2 - 1, real["widths"], real, [])
    assert "loss/g_div" in losses
    assert live_diversity(tr) > 1.5 * before
    # Off by default: no second prior chunk, no div loss.
    off = make_trainer(words_lmdb, tmp_path / "off", g_every=1)
    assert "loss/g_div" not in off.g_step(real["images"] * 2 - 1, real["widths"], real, [])[0]


def test_local_mode_seeking_varies_the_letters_within_one_style_up_to_its_cap(words_lmdb, tmp_path):
    make_trainer(words_lmdb, tmp_path / "old").save()  # a GAN without letter noise
    sections = {"generator": {"char_noise": 4}}
    only_div = dict(g_every=1, w_adv=0.0, alpha=0.0, w_rec=0.0, w_info=0.0, w_div=1.0, div_local=True,
                    lr_char_noise=1e-2, sample_every=1000)
    runs = {}
    for cap in (0.0, 0.02):
        torch.manual_seed(0)
        tr = make_trainer_with(words_lmdb, tmp_path / f"cap{cap}", sections, div_cap=cap, **only_div)
        tr.resume(tmp_path / "old" / "last.pt", warm=True)  # --init-from adds the letters' noise
        assert [g["lr"] for g in tr.opt_g.param_groups] == [tr.config["train"]["lr_g"], 1e-2]
        real = next(iter(torch.utils.data.DataLoader(tr.dataset, batch_size=8, collate_fn=tr.collate)))
        before, steps = live_diversity(tr, "noise_diversity"), []
        for step in range(6):
            tr.step = step
            steps.append(tr.g_step(real["images"] * 2 - 1, real["widths"], real, []))
        runs[cap] = (before, live_diversity(tr, "noise_diversity"), steps)
    before, after, steps = runs[0.0]
    assert after > 3 * before  # the letters' noise, near nothing at first, now shows
    assert all("std_grad_div" in stats and "dist/g_div" not in losses for losses, stats in steps)
    _, capped, steps = runs[0.02]
    # Once every pair is past the cap the term adds nothing (the balancer skips it), and its logged
    # distance is the pairs' own, not the capped one.
    past = [losses for losses, stats in steps if "std_grad_div" not in stats]
    assert past and all(float(p["dist/g_div"]) > 0.02 and float(p["loss/g_div"].detach()) == pytest.approx(-0.02) for p in past)
    assert capped < after
    # The second chunk kept z: with letter noise as the only difference, z-diversity is not what moved.
    with pytest.raises(ValueError, match="char_noise"):
        make_trainer(words_lmdb, tmp_path / "bad", w_div=1.0, div_local=True)
    with pytest.raises(ValueError, match="div_cap"):
        make_trainer(words_lmdb, tmp_path / "bad", div_cap=-1.0)


def test_mode_seeking_in_the_writer_classifiers_features_moves_what_w_reads(two_writers_lmdb, tmp_path):
    from htr_augment.gan.data import encode_texts

    @torch.no_grad()
    def w_noise_distance(tr, n=8):
        """W's feature distance (div_stage) between one style's words in two letter noises (live G)."""
        tokens, lengths, _ = encode_texts(list(tr.dataset.texts[:n]), tr.alphabet)
        gen = torch.Generator().manual_seed(5)
        z = tr.prior_z(n, gen)
        noises = torch.randn(2, n, tokens.shape[1], tr.G.char_noise, generator=gen)
        tr.G.eval()
        a, b = (tr.G(tokens, lengths, z, noise) for noise in noises)
        tr.G.train()
        return float(tr.writer_distance(a, b, lengths * tr.G.px_per_char).mean())

    torch.manual_seed(0)
    tr = make_trainer_with(two_writers_lmdb, tmp_path, {"generator": {"char_noise": 4}}, g_every=1, w_adv=0.0,
                           alpha=0.0, w_rec=0.0, w_info=0.0, w_div=1.0, div_local=True, div_space="writer",
                           w_wid=1.0, wid_start=10 ** 6, lr_char_noise=1e-2)
    real = next(iter(torch.utils.data.DataLoader(tr.dataset, batch_size=8, collate_fn=tr.collate)))
    w_before = {k: v.clone() for k, v in tr.W.state_dict().items()}
    before = w_noise_distance(tr)
    for step in range(6):
        tr.step = step
        losses, stats = tr.g_step(real["images"] * 2 - 1, real["widths"], real, [])
        # uncapped: the loss is the distance itself, logged beside it
        assert float(losses["loss/g_div"].detach()) == pytest.approx(-float(losses["dist/g_div"]))
    after = w_noise_distance(tr)
    assert after > 3 * before, (before, after)
    # W is the ruler, not a player: G's term leaves its weights alone
    assert all(torch.equal(v, tr.W.state_dict()[k]) for k, v in w_before.items())
    with pytest.raises(ValueError, match="div_space"):
        make_trainer(two_writers_lmdb, tmp_path / "bad", w_div=1.0, div_space="writer")  # no W
    with pytest.raises(ValueError, match="div_space"):
        make_trainer(two_writers_lmdb, tmp_path / "bad", div_space="features")


def test_latent_reconstruction_recovers_z_on_a_toy_case(words_lmdb, tmp_path):
    # A 4-d style (one dimension per noise chunk) and only the latent-reconstruction term: E learns
    # to read back the z that G wrote while G learns to make it readable. Reading every z as the
    # prior's mean (0) errs by E|z| = 0.8 per dimension.
    torch.manual_seed(0)
    tr = make_trainer_with(words_lmdb, tmp_path, {"generator": {"z_dim": 4}}, g_every=1, w_adv=0.0, alpha=0.0,
                           w_rec=0.0, w_info=1.0, lr_g=3e-4)
    real = next(iter(torch.utils.data.DataLoader(tr.dataset, batch_size=16, collate_fn=tr.collate)))
    history = []
    for step in range(100):
        tr.step = step
        history.append(float(tr.g_step(real["images"] * 2 - 1, real["widths"], real, [])[0]["loss/g_info"].detach()))
    first, last = sum(history[:10]) / 10, sum(history[-10:]) / 10
    assert last < 0.75 * 0.8 and last < 0.7 * first, history[::10]


@pytest.fixture(scope="module")
def two_writers_lmdb(tmp_path_factory):
    """Words by two 'writers' that differ only in stroke weight (cv2 thickness 1 vs 3)."""
    import cv2
    import numpy as np

    from htr_augment.data.sources import Item
    tmp = tmp_path_factory.mktemp("writers")
    rng = random.Random(1)
    items = []
    for i in range(64):
        word = "".join(rng.choice("abcdeh") for _ in range(rng.randint(2, 5)))
        thick = 1 + 2 * (i % 2)
        img = np.full((32, 16 * len(word) + 8), 255, np.uint8)
        cv2.putText(img, word, (4, 24), cv2.FONT_HERSHEY_SIMPLEX, 32 / 45, 0, thick)
        items.append(Item(f"word {i}", word, "bold" if thick == 3 else "thin", lambda img=img: (None, img)))
    build(items, tmp / "w.lmdb", BuildOptions(height=32), inputs=["drawn"], progress=False)
    return tmp / "w.lmdb"


def test_writer_identity_trains_w_on_real_words_and_moves_g_and_e_not_w(two_writers_lmdb, tmp_path):
    torch.manual_seed(0)
    tr = make_trainer(two_writers_lmdb, tmp_path, g_every=1, w_adv=0.0, alpha=0.0, w_rec=0.0, w_info=0.0,
                      w_wid=1.0, wid_start=30, lr_w=1e-3)
    assert tr.writer_ids == ["bold", "thin"]
    loader = torch.utils.data.DataLoader(tr.dataset, batch_size=16, shuffle=True, collate_fn=tr.collate,
                                         generator=torch.Generator().manual_seed(0))
    acc = []
    for step in range(30):
        real = next(iter(loader))
        acc.append(float(tr.w_step(real["images"] * 2 - 1, real["widths"], real)["acc/w_real"]))
    assert sum(acc[-10:]) / 10 > 0.9, acc  # W tells the stroke weights apart on real words
    # G's writer term (from wid_start on): new text in E(x) judged by W; its gradient reaches G and E, not W.
    x = real["images"] * 2 - 1
    early = make_trainer(two_writers_lmdb, tmp_path / "early", g_every=1, w_wid=1.0, wid_start=30)
    early.step = 29
    assert "loss/g_wid" not in early.g_step(x, real["widths"], real, [])[0]
    tr.step = 30
    tr.W.zero_grad(set_to_none=True)
    e_before = [q.detach().clone() for q in tr.E.parameters()]
    losses, _ = tr.g_step(x, real["widths"], real, [])
    assert torch.isfinite(losses["loss/g_wid"]) and 0.0 <= float(losses["acc/g_wid"]) <= 1.0
    assert all(q.grad is None for q in tr.W.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(e_before, tr.E.parameters()))
    tr.save()
    ckpt = load_checkpoint(tmp_path / "last.pt", kind="gan")
    assert ckpt["extra"]["writer_ids"] == ["bold", "thin"] and "writer_classifier" in ckpt["models"]
    again = make_trainer(two_writers_lmdb, tmp_path, w_wid=1.0)
    again.resume(tmp_path / "last.pt")
    assert all(torch.equal(a, b) for a, b in zip(tr.W.state_dict().values(), again.W.state_dict().values()))


def test_resume_takes_the_config_s_learning_rates_and_lr_w_0_holds_w_fixed(two_writers_lmdb, tmp_path):
    torch.manual_seed(0)
    tr = make_trainer(two_writers_lmdb, tmp_path, w_wid=1.0, lr_w=1e-3, lr_g=1e-4)
    real = tr.collate([tr.dataset[i] for i in range(16)])
    x = real["images"] * 2 - 1
    for _ in range(3):  # Adam moments and step counts to carry over
        tr.w_step(x, real["widths"], real)
    tr.save()
    # torch's load_state_dict alone would bring back the saved rates (1e-3, 1e-4)
    frozen = make_trainer(two_writers_lmdb, tmp_path, w_wid=1.0, lr_w=0.0, lr_g=3e-4)
    frozen.resume(tmp_path / "last.pt")
    assert [g["lr"] for g in frozen.opt_w.param_groups] == [0.0]
    assert [g["lr"] for g in frozen.opt_g.param_groups] == [3e-4]
    assert frozen.opt_w.state_dict()["state"][0]["step"] == 3  # the rest of the saved state is kept
    before = [p.detach().clone() for p in frozen.W.parameters()]
    acc = frozen.w_step(x, real["widths"], real)["acc/w_real"]  # W still reads the batch (logged)...
    assert 0.0 <= float(acc) <= 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, frozen.W.parameters()))  # ...but does not move
    losses, _ = frozen.g_step(x, real["widths"], real, frozen.config["train"]["diffaugment"])
    assert "loss/g_wid" in losses  # G is still judged by the fixed W...
    assert all(p.grad is None for p in frozen.W.parameters())  # ...without W's weight gradients
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in frozen.G.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, frozen.W.parameters()))
    assert all(p.grad is not None for p in tr.W.parameters())  # a learning W (lr_w > 0) gets them


def test_stretch_ink_batch_measures_each_word_on_its_own_columns():
    from htr_augment.images import stretch_ink, stretch_ink_batch
    ink = torch.zeros(2, 1, 4, 8)
    ink[0, :, :, :4] = torch.linspace(0.1, 0.5, 16).reshape(1, 4, 4)  # a faint word, 4 columns
    ink[1, :, :, :] = 0.9  # a dark word over the whole width
    out = stretch_ink_batch(ink, torch.tensor([4, 8]), 1.0)
    assert torch.allclose(out[0, :, :, :4], stretch_ink(ink[0, :, :, :4], 1.0))  # padding not counted
    assert torch.allclose(out[1], torch.ones(1, 4, 8))
    blank = stretch_ink_batch(torch.zeros(1, 1, 4, 4), torch.tensor([4]), 0.99)
    assert torch.equal(blank, torch.zeros(1, 1, 4, 4))  # next to no ink: unchanged


def test_stretched_w_input_hides_the_ink_level_and_restarts_a_raw_w(two_writers_lmdb, tmp_path, capsys):
    torch.manual_seed(0)
    raw = make_trainer(two_writers_lmdb, tmp_path, w_wid=1.0)
    real = raw.collate([raw.dataset[i] for i in range(8)])
    ink, w = real["images"], real["widths"]
    faint = (ink * 0.5) * 2 - 1  # the same strokes at half the darkness
    assert not torch.allclose(raw.w_view(faint, w), raw.w_view(ink * 2 - 1, w))
    raw.save()
    st = make_trainer(two_writers_lmdb, tmp_path, w_wid=1.0, w_input="stretched")
    assert torch.allclose(st.w_view(faint, w), st.w_view(ink * 2 - 1, w), atol=1e-5)
    fresh = [p.detach().clone() for p in st.W.parameters()]
    st.resume(tmp_path / "last.pt")  # W was trained on raw words: not reused
    assert all(torch.equal(a, b) for a, b in zip(fresh, st.W.parameters()))
    assert "W starts afresh" in capsys.readouterr().err
    with pytest.raises(ValueError, match="w_input"):
        make_trainer(two_writers_lmdb, tmp_path / "x", w_wid=1.0, w_input="binary")


def test_writer_identity_resumes_weights_without_a_classifier_and_needs_writer_ids(two_writers_lmdb, words_lmdb,
                                                                                   tmp_path):
    plain = make_trainer(two_writers_lmdb, tmp_path / "plain", checkpoint_every=2, sample_every=1000)
    plain.fit(2)
    assert plain.W is None and "writer_classifier" not in load_checkpoint(tmp_path / "plain" / "last.pt")["models"]
    more = make_trainer(two_writers_lmdb, tmp_path / "plain", w_wid=1.0, checkpoint_every=2, sample_every=1000)
    more.resume(tmp_path / "plain" / "last.pt")  # W starts fresh on older weights
    more.fit(4)
    assert "writer_classifier" in load_checkpoint(tmp_path / "plain" / "last.pt")["models"]
    with pytest.raises(ValueError, match="writer id"):
        make_trainer(words_lmdb, tmp_path / "none", w_wid=1.0)


def test_writer_loss_counts_only_words_with_a_writer():
    from htr_augment.gan.trainer import writer_loss
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [5.0, -5.0]])
    loss, acc = writer_loss(logits, torch.tensor([0, 0, -100]))  # the third word has no writer id
    expected = torch.nn.functional.cross_entropy(logits[:2], torch.tensor([0, 0]))
    assert loss == pytest.approx(float(expected)) and acc == pytest.approx(0.5)
    loss, acc = writer_loss(logits, torch.full((3,), -100))  # a batch without any: zero, not NaN
    assert float(loss) == 0.0 and float(acc) == 0.0


def test_text_sampler_can_favour_capitalized_words_and_keeps_its_default_stream():
    from htr_augment.gan.data import TextSampler
    lexicon = ["Montréal", "ville", "le", "QUE", "la", "une", "de", "et"]
    plain = TextSampler(lexicon, seed=3)
    # caps_share 0 draws exactly as before the option (a resumed run asks for the same words).
    rng = random.Random("3:0:7")
    assert plain.draw(7, 50) == [rng.choice(lexicon) for _ in range(50)]
    caps = TextSampler(lexicon, seed=3, caps_share=0.8).draw(7, 2000)
    share = sum(w in ("Montréal", "QUE") for w in caps) / len(caps)
    assert 0.8 < share < 0.9  # 0.8 from the capitalized words, plus their 2/8 of the rest
    assert TextSampler(lexicon, seed=3, caps_share=0.8).draw(7, 2000) == caps
    assert TextSampler(["a", "b"], seed=3, caps_share=0.5).draw(1, 5) == TextSampler(["a", "b"], seed=3).draw(1, 5)
    with pytest.raises(ValueError, match="text_caps_share"):
        TextSampler(lexicon, seed=3, caps_share=1.5)


def test_contextual_loss_asks_for_the_style_word_s_features_anywhere_and_ignores_padding():
    from htr_augment.gan.contextual import contextual_loss
    torch.manual_seed(0)
    style = torch.randn(3, 8, 2, 10)
    valid = torch.ones(3, 10, dtype=torch.bool)
    assert float(contextual_loss(style, valid, style, valid)) < 1e-3
    shuffled = style[..., torch.randperm(10)]  # the same local features in other places
    assert float(contextual_loss(shuffled, valid, style, valid)) < 1e-3
    other = torch.randn(3, 8, 2, 10, requires_grad=True)
    loss = contextual_loss(other, valid, style, valid)
    assert float(loss.detach()) > 0.3
    loss.backward()
    assert other.grad.abs().sum() > 0
    # Columns past a word's width count on neither side.
    junk = torch.randn(3, 8, 2, 4) * 5
    pad = torch.cat([torch.ones(3, 10, dtype=torch.bool), torch.zeros(3, 4, dtype=torch.bool)], 1)
    for gen, gen_valid, st, st_valid in ((torch.cat([other, junk], -1), pad, style, valid),
                                         (other, valid, torch.cat([style, junk], -1), pad)):
        assert torch.allclose(contextual_loss(gen, gen_valid, st, st_valid), loss)


def test_contextual_loss_trains_g_toward_the_style_word_and_not_w(two_writers_lmdb, tmp_path):
    torch.manual_seed(0)
    tr = make_trainer(two_writers_lmdb, tmp_path, g_every=1, w_adv=0.0, alpha=0.0, w_rec=0.0, w_info=0.0,
                      w_wid=1e-9, w_cx=1.0, lr_w=1e-3, lr_g=1e-3)
    loader = torch.utils.data.DataLoader(tr.dataset, batch_size=16, shuffle=True, collate_fn=tr.collate,
                                         generator=torch.Generator().manual_seed(0))
    for _ in range(20):  # W learns features of real words first
        real = next(iter(loader))
        tr.w_step(real["images"] * 2 - 1, real["widths"], real)
    x = real["images"] * 2 - 1
    tr.W.zero_grad(set_to_none=True)
    w_before = [q.detach().clone() for q in tr.W.parameters()]
    cx = [float(tr.g_step(x, real["widths"], real, [])[0]["loss/g_cx"].detach()) for _ in range(25)]
    assert all(q.grad is None for q in tr.W.parameters())
    assert all(torch.equal(a, b) for a, b in zip(w_before, tr.W.parameters()))
    assert sum(cx[-5:]) / 5 < 0.9 * sum(cx[:5]) / 5, cx  # G's new text in E(x) takes on x's local features
    with pytest.raises(ValueError, match="w_cx needs the writer classifier"):
        make_trainer(two_writers_lmdb, tmp_path / "no_w", w_cx=1.0)
    with pytest.raises(ValueError, match="cx_stage = 7: .* stages 1 to 4"):  # refused before any step
        make_trainer(two_writers_lmdb, tmp_path / "deep", w_wid=1e-9, w_cx=1.0, cx_stage=7)
    with pytest.raises(ValueError, match="cx_on = 'both': one of reconstruction, new_text"):
        make_trainer(two_writers_lmdb, tmp_path / "what", w_wid=1e-9, w_cx=1.0, cx_on="both")


@pytest.mark.parametrize("cx_on, chunk", [("new_text", 1), ("reconstruction", 0)])
def test_contextual_loss_compares_x_with_the_chosen_word_in_its_style(two_writers_lmdb, tmp_path, cx_on, chunk):
    torch.manual_seed(0)
    tr = make_trainer(two_writers_lmdb, tmp_path, g_every=1, w_wid=1e-9, w_cx=1.0, cx_on=cx_on)
    real = next(iter(torch.utils.data.DataLoader(tr.dataset, batch_size=4, collate_fn=tr.collate)))
    generated, compared = [], []
    forward, feature_map = tr.G_train.forward, tr.W.feature_map
    tr.G_train.forward = lambda *a: generated.append(forward(*a)) or generated[-1]

    def spy(images, widths, stages=None):  # W's own forward (writer loss) calls it without a stage
        if stages is not None:
            compared.append(images)
        return feature_map(images, widths, stages)
    tr.W.feature_map = spy
    tr.g_step(real["images"] * 2 - 1, real["widths"], real, [])
    B = real["images"].shape[0]
    assert torch.equal(compared[0], real["images"] * 2 - 1)  # x itself, then G's word
    assert torch.equal(compared[1], generated[0][chunk * B:(chunk + 1) * B])


def test_writer_probe_reports_w_on_seven_views_and_a_fresh_w(two_writers_lmdb, words_lmdb, tmp_path, capsys):
    import json

    from htr_augment.gan.writer_probe import main as probe_main
    tr = make_trainer(two_writers_lmdb, tmp_path / "w", w_wid=1.0, checkpoint_every=2, sample_every=1000)
    tr.fit(2)
    out = tmp_path / "probe.json"
    assert probe_main([str(tmp_path / "w" / "last.pt"), "--train", str(two_writers_lmdb), "--words", "16",
                       "--fresh", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["step"] == 2 and result["w_input"] == "raw"
    assert set(result["trained_w"]) == {"real", "real, ink stretched", "real, half ink", "G reconstruction (EMA)",
                                        "G new text (EMA)", "G reconstruction (live)", "G new text (live)"}
    assert all(0 <= r["acc"] <= 1 and r["ce"] > 0 for r in result["trained_w"].values())
    # the live G is probed, not the EMA twice (they differ after two steps)
    assert result["trained_w"]["G reconstruction (live)"] != result["trained_w"]["G reconstruction (EMA)"]
    assert set(result["fresh_w"]) == {"raw", "stretched"}
    assert "new W on stretched words, 2 steps" in capsys.readouterr().out
    plain = make_trainer(words_lmdb, tmp_path / "plain", checkpoint_every=1, sample_every=1000)
    plain.fit(1)
    assert probe_main([str(tmp_path / "plain" / "last.pt"), "--train", str(words_lmdb)]) == 2
    assert "trained without a writer classifier" in capsys.readouterr().err
