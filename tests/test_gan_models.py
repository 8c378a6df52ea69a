import copy
from pathlib import Path

import pytest
import torch

from htr_augment.gan.balance import GradientBalancer
from htr_augment.gan.diffaugment import diff_augment
from htr_augment.gan.models import Discriminator, Generator


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return Generator(30, height=32, px_per_char=16, base=8, z_dim=32), Discriminator(base=8)


@pytest.mark.parametrize("lengths", [[1], [5, 2], [17, 1, 9]])
def test_generator_width_follows_word_length(nets, lengths):
    G, D = nets
    L = max(lengths)
    tokens = torch.zeros(len(lengths), L, dtype=torch.long)
    for i, n in enumerate(lengths):
        tokens[i, :n] = torch.randint(1, 30, (n,))
    lengths = torch.tensor(lengths)
    x = G(tokens, lengths, torch.randn(len(lengths), 32))
    assert x.shape == (len(lengths), 1, 32, 16 * L)
    assert x.min() >= -1 and x.max() <= 1
    for i, n in enumerate(lengths.tolist()):
        assert (x[i, :, :, 16 * n:] == -1).all()  # beyond the word: background
    scores = D(x, G.widths(lengths))
    assert scores.shape == (len(lengths),) and torch.isfinite(scores).all()


def test_text_encoding_of_a_word_ignores_batch_padding(nets):
    G, _ = nets
    tok = torch.randint(1, 30, (1, 4))
    alone = G.text(tok, torch.tensor([4]))
    padded = G.text(torch.cat([tok, torch.zeros(1, 3, dtype=torch.long)], 1), torch.tensor([4]))
    # Packed BiLSTM: the backward direction starts at the word's own last character.
    assert torch.allclose(alone, padded[:, :4], atol=1e-6)
    assert (padded[:, 4:] == 0).all()


@pytest.mark.parametrize("mode", ["train", "eval"])
@torch.no_grad()
def test_a_word_does_not_depend_on_its_batch_mates(mode):
    # Masked AdaIN: statistics per word over its own columns, in training as in eval mode
    # (batch norm counted the zeroed padding, so batch mates moved a word 4x more than z did).
    torch.manual_seed(1)
    G = Generator(30, height=32, px_per_char=16, base=8, z_dim=32).train(mode == "train")
    tok = torch.randint(1, 30, (1, 4))
    z = torch.randn(1, 32)
    # Two identical copies: spectral norm's power iteration (one per training forward) then
    # moves both the same way, and only the batch differs.
    alone = copy.deepcopy(G)(tok, torch.tensor([4]), z)
    others = torch.randint(1, 30, (2, 7))
    batch = torch.cat([torch.cat([tok, torch.zeros(1, 3, dtype=torch.long)], 1), others])
    together = copy.deepcopy(G)(batch, torch.tensor([4, 7, 5]), torch.cat([z, torch.randn(2, 32)]))
    G.train()
    assert torch.allclose(alone, together[:1, :, :, :64], atol=1e-4)
    assert (together[0, :, :, 64:] == -1).all()
    assert not torch.allclose(alone, G(tok, torch.tensor([4]), torch.randn(1, 32)), atol=1e-3)  # z matters


@torch.no_grad()
def test_batch_norm_generator_depends_on_batch_mates_in_train_mode():
    # The first generators' norm, kept for their weights: the defect the masked AdaIN removes.
    torch.manual_seed(0)
    G = Generator(30, height=32, px_per_char=16, base=8, z_dim=32, norm="batch").train()
    tok, z = torch.randint(1, 30, (1, 2)), torch.randn(1, 32)
    alone = copy.deepcopy(G)(torch.cat([tok, tok]), torch.tensor([2, 2]), torch.cat([z, z]))[:1]
    mates = copy.deepcopy(G)(torch.cat([torch.cat([tok, torch.zeros(1, 8, dtype=torch.long)], 1), torch.randint(1, 30, (1, 10))]),
              torch.tensor([2, 10]), torch.cat([z, torch.randn(1, 32)]))[:1, :, :, :32]
    assert not torch.allclose(alone, mates, atol=1e-3)


def _tiled(pattern: torch.Tensor, times: int) -> torch.Tensor:
    return pattern.repeat(1, 1, 1, times)


def test_discriminator_score_does_not_grow_with_word_width():
    torch.manual_seed(0)
    char = torch.rand(1, 1, 32, 16) * 2 - 1  # one "character" tiled into words of 2..12
    spread = {}
    for pool in ("mean", "sum"):
        D = Discriminator(base=8, pool=pool)
        for p in D.parameters():  # a D whose per-position bias is far from 0, as in the trained one
            if p.dim() == 1:
                p.data.fill_(0.3)
        D.eval()  # spectral norm's power iteration stays put between the words
        scores = torch.stack([D(_tiled(char, n), torch.tensor([16 * n]))[0] for n in range(2, 13)]).detach()
        widths = torch.arange(2, 13, dtype=torch.float)
        corr = torch.corrcoef(torch.stack([scores, widths]))[0, 1]
        spread[pool] = (float(scores.max() - scores.min()), float(corr))
    assert abs(spread["sum"][1]) > 0.95  # the old head: the score is the width
    assert spread["mean"][0] < 0.1 * spread["sum"][0], spread


def test_balancing_keeps_the_ctc_weight_bounded_below_and_steady():
    torch.manual_seed(0)
    bal = GradientBalancer({"adv": 1.0, "ctc": 1.0}, decay=0.99)
    g_ctc = torch.randn(4, 1, 8, 32) * 50.0
    ctc_parts, totals = [], []
    for step in range(300):
        scale = 10 ** (-step / 30)  # D's gradient fades from 1 to 1e-10, as it did over the 10k-step run
        g_adv = torch.randn(4, 1, 8, 32) * scale * (38.0 if step == 200 else 1.0)  # and one 38x spike
        combined, stats = bal.combine({"adv": g_adv, "ctc": g_ctc})
        adv_part = g_adv / ((bal.std["adv"] + bal.eps) * g_adv.numel())
        ctc_parts.append(float((combined - adv_part).std() * g_ctc.numel()))
        totals.append(float(combined.std() * g_ctc.numel()))
    # The CTC term keeps its configured share (alpha = 1 in normalised units) whatever D does...
    assert min(ctc_parts) == pytest.approx(1.0, rel=1e-3) and max(ctc_parts) == pytest.approx(1.0, rel=1e-3)
    # ...and a 38x jump of D's gradient moves G's whole gradient far less than 38x.
    assert max(totals[195:210]) < 2.5 * totals[195]
    # In Alonso's terms (weight = std(adv) / std(ctc)) the CTC term would have faded with D.
    assert stats["ctc_weight"] < 1e-2


def test_balancer_feeds_only_the_image_producer_and_resumes():
    torch.manual_seed(0)
    gen = torch.nn.Linear(4, 16)
    critic = torch.nn.Linear(16, 1)
    reader = torch.nn.Linear(16, 3)
    image = gen(torch.randn(2, 4))
    bal = GradientBalancer({"adv": 1.0, "ctc": 2.0, "rec": 0.0})
    stats = bal.backward(image, {"adv": -critic(image).mean(), "ctc": reader(image).pow(2).mean() * 1e3,
                                 "rec": image.abs().mean()})
    assert gen.weight.grad is not None and gen.weight.grad.abs().sum() > 0
    assert critic.weight.grad is None and reader.weight.grad is None
    assert set(stats) == {"std_grad_adv", "std_grad_ctc", "ctc_weight"}  # rec has weight 0: left out
    again = GradientBalancer({"adv": 1.0, "ctc": 2.0})
    again.load_state_dict(bal.state_dict())
    assert again.std == bal.std
    with pytest.raises(ValueError, match="no generator loss"):
        GradientBalancer({"adv": 0.0}).combine({"adv": torch.ones(2)})


def test_diffaugment_is_differentiable_and_checks_policy():
    x = torch.rand(3, 1, 32, 64, requires_grad=True) * 2 - 1
    x.retain_grad()
    widths = torch.tensor([64, 40, 16])
    y = diff_augment(x, widths, ["translation", "cutout", "color"])
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(diff_augment(x, widths, []), x)
    with pytest.raises(ValueError, match="unknown DiffAugment policy 'flip'"):
        diff_augment(x, widths, ["flip"])


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).parents[1] / "configs" / "gan").glob("*.toml")))
def test_shipped_configs_build(name):
    from htr_augment.gan.config import load_gan_config
    from htr_augment.gan.train import recognizer_config_for
    from htr_augment.gan.word_generator import build_generator
    from recognizer.model import CRNN

    from .conftest import REPO
    cfg = load_gan_config(REPO / "configs" / "gan" / f"{name}.toml")
    G = build_generator(cfg, 40)
    R = CRNN(recognizer_config_for(cfg), 40)
    x = G(torch.randint(1, 40, (2, 3)), torch.tensor([3, 2]), torch.randn(2, G.z_dim))
    assert x.shape == (2, 1, cfg["data"]["height"], 3 * cfg["data"]["px_per_char"])
    # R must see at least one CTC frame per character (plus blanks between repeats).
    assert cfg["data"]["px_per_char"] // R.stride >= 2


def test_config_typo_is_an_error(tmp_path):
    from htr_augment.config import ConfigError
    from htr_augment.gan.config import load_gan_config
    (tmp_path / "bad.toml").write_text("[train]\nalpah = 1.0\n")
    with pytest.raises(ConfigError, match="unknown key 'alpah'"):
        load_gan_config(tmp_path / "bad.toml")


def test_config_extends_another_and_states_only_its_changes(tmp_path):
    from htr_augment.config import ConfigError
    from htr_augment.gan.config import load_gan_config
    (tmp_path / "base.toml").write_text("[train]\nalpha = 1.0\nlr_g = 5e-5\n")
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n[train]\nalpha = 3.0\n')
    base, child = load_gan_config(tmp_path / "base.toml"), load_gan_config(tmp_path / "child.toml")
    assert child["train"].pop("alpha") == 3.0 and base["train"].pop("alpha") == 1.0
    assert child == base and child["train"]["lr_g"] == 5e-5  # everything else comes from base.toml
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n[train]\nalpha = 2.0\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ConfigError, match="cycle"):
        load_gan_config(tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text('extends = "missing.toml"\n')
    with pytest.raises(ConfigError, match=r"missing.toml: config file not found \(extended by .*c.toml\)"):
        load_gan_config(tmp_path / "c.toml")
    (tmp_path / "d.toml").write_text('extends = "c2.toml"\n[train]\nalpah = 1.0\n')
    (tmp_path / "c2.toml").write_text("[train]\nalpha = 2.0\n")
    with pytest.raises(ConfigError, match="unknown key 'alpah'"):  # typos still caught after the overlay
        load_gan_config(tmp_path / "d.toml")
    # a list: each base over the one before, then the file itself
    (tmp_path / "gpu.toml").write_text("[train]\nbatch_size = 64\nalpha = 9.0\n")
    (tmp_path / "both.toml").write_text('extends = ["child.toml", "gpu.toml"]\n[train]\nlr_g = 1e-4\n')
    both = load_gan_config(tmp_path / "both.toml")["train"]
    assert (both["batch_size"], both["alpha"], both["lr_g"]) == (64, 9.0, 1e-4)
    (tmp_path / "e.toml").write_text('extends = ["base.toml", 3]\n')
    with pytest.raises(ConfigError, match="a file name or a list of file names"):
        load_gan_config(tmp_path / "e.toml")


def test_ema_warms_up_then_averages():
    from htr_augment.training.ema import EMA
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = EMA(net, decay=0.999)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net, step=0)  # decay 0.1: the first average is mostly the trained weights
    assert float(ema.model.weight) == pytest.approx(0.9)
    assert ema.decay_at(10_000) == 0.999 and ema.decay_at(None) == 0.999
    ema.update(net)  # without a step: the configured decay
    assert float(ema.model.weight) == pytest.approx(0.9 + 0.1 * 0.001)


def test_char_style_starts_as_the_identity_then_lets_the_style_change_letters_apiece():
    torch.manual_seed(0)
    plain = Generator(8, height=32, px_per_char=16, base=4, z_dim=16, embed_dim=8, text_hidden=8).eval()
    styled = Generator(8, height=32, px_per_char=16, base=4, z_dim=16, embed_dim=8, text_hidden=8,
                       char_style=True).eval()
    missing, unexpected = styled.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["char_film.bias", "char_film.weight"] and not unexpected
    tokens, lengths, z = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 0]]), torch.tensor([4, 3]), torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(styled(tokens, lengths, z), plain(tokens, lengths, z))  # zero FiLM: same function
        styled.char_film.weight.normal_()
        assert not torch.allclose(styled(tokens, lengths, z), plain(tokens, lengths, z), atol=1e-3)


def test_minibatch_std_starts_as_a_no_op_then_scores_a_group_by_how_much_its_words_vary():
    torch.manual_seed(0)
    plain, mb = Discriminator(base=8), Discriminator(base=8, mbstd_group=4)
    varied = torch.rand(8, 1, 32, 48) * 2 - 1
    widths = torch.full((8,), 48)
    for _ in range(20):  # spectral norm's power iteration settles
        plain(varied, widths)
    mb.load_state_dict(plain.state_dict(), strict=False)  # all but the new zero-initialised term
    plain.eval(), mb.eval()
    assert torch.allclose(mb(varied, widths), plain(varied, widths))
    torch.nn.init.constant_(mb.mbstd.weight, -10.0)  # as a trained D might: low spread looks real
    same = varied[:1].expand(8, -1, -1, -1)  # one word eight times: zero spread in every group
    lift_same = mb(same, widths) - plain(same, widths)
    lift_varied = mb(varied, widths) - plain(varied, widths)
    assert lift_same.abs().max() < 0.1  # no spread: next to nothing added
    assert (lift_varied < -0.3).all(), lift_varied
    # Groups are consecutive words: the first group's scores ignore the second group.
    other = varied.clone()
    other[4:] = torch.rand(4, 1, 32, 48) * 2 - 1
    assert torch.equal(mb(other, widths)[:4], mb(varied, widths)[:4])
    assert not torch.allclose(mb(other, widths)[4:], mb(varied, widths)[4:])
    with pytest.raises(ValueError, match="mbstd_group"):
        Discriminator(base=8, pool="sum", mbstd_group=4)


@torch.no_grad()
def test_letter_noise_starts_near_nothing_is_seeded_per_word_and_varies_letters_apiece():
    torch.manual_seed(0)
    kw = dict(height=32, px_per_char=16, base=4, z_dim=16, embed_dim=8, text_hidden=8)
    plain, noisy = Generator(8, **kw).eval(), Generator(8, char_noise=4, **kw).eval()
    missing, unexpected = noisy.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["char_noise_proj.bias", "char_noise_proj.weight"] and not unexpected
    tokens, lengths, z = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 0]]), torch.tensor([4, 3]), torch.randn(2, 16)
    assert (noisy(tokens, lengths, z) - plain(tokens, lengths, z)).abs().max() < 0.05  # near the old function
    noisy.char_noise_proj.weight.normal_()
    # Without explicit noise, each word's is drawn from its style and text: the same word in the
    # same style is the same image, alone or beside another word, with or without padding.
    both = noisy(tokens, lengths, z)
    alone = noisy(torch.tensor([[5, 6, 7]]), torch.tensor([3]), z[1:])
    assert torch.allclose(both[1:, :, :, :48], alone, atol=1e-5)
    assert torch.equal(noisy.seeded_noise(tokens, lengths, z), noisy.seeded_noise(tokens, lengths, z))
    assert (noisy.seeded_noise(tokens, lengths, z)[1, 3] == 0).all()  # none past the word
    # Other noise, same style: another image, changed letter by letter (each letter's own columns).
    noise = torch.zeros(2, 4, 4)
    base = noisy(tokens, lengths, z, noise)
    noise[0, 3] = torch.randn(4)  # only the last letter of the first word
    moved = (noisy(tokens, lengths, z, noise) - base).abs()[0, 0].amax(0)  # per column
    assert moved[48:].max() > 1e-2 and moved[:16].max() < moved[48:].max() / 10
    assert torch.equal(plain(tokens, lengths, z, noise), plain(tokens, lengths, z))  # ignored without the pathway
