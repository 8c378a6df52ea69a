import pytest
import torch

from htr_augment.gan.balance import backward_balanced, balance_gradients
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


def test_a_word_does_not_depend_on_its_batch_in_eval_mode(nets):
    G, _ = nets
    torch.manual_seed(1)
    G.train()
    G(torch.randint(1, 30, (4, 6)), torch.tensor([6, 3, 2, 5]), torch.randn(4, 32))  # some BN statistics
    G.eval()
    tok = torch.randint(1, 30, (1, 4))
    z = torch.randn(1, 32)
    alone = G(tok, torch.tensor([4]), z)
    others = torch.randint(1, 30, (2, 7))
    batch = torch.cat([torch.cat([tok, torch.zeros(1, 3, dtype=torch.long)], 1), others])
    together = G(batch, torch.tensor([4, 7, 5]), torch.cat([z, torch.randn(2, 32)]))
    G.train()
    assert torch.allclose(alone, together[:1, :, :, :64], atol=1e-5)
    assert (together[0, :, :, 64:] == -1).all()


def test_balanced_ctc_gradient_has_the_required_std_ratio():
    torch.manual_seed(0)
    g_adv = torch.randn(4, 1, 8, 32) * 0.01
    g_ctc = torch.randn(4, 1, 8, 32) * 50.0
    for alpha in (0.5, 1.0, 2.0):
        combined, scale = balance_gradients(g_adv, g_ctc, alpha)
        assert torch.allclose((combined - g_adv).std(), alpha * g_adv.std(), rtol=1e-4)
        assert scale == pytest.approx(alpha * float(g_adv.std() / g_ctc.std()), rel=1e-4)


def test_backward_balanced_feeds_only_the_image_producer():
    torch.manual_seed(0)
    gen = torch.nn.Linear(4, 16)
    critic = torch.nn.Linear(16, 1)
    reader = torch.nn.Linear(16, 3)
    image = gen(torch.randn(2, 4))
    loss_adv = -critic(image).mean()
    loss_ctc = reader(image).pow(2).mean() * 1e3
    stats = backward_balanced(image, loss_adv, loss_ctc, alpha=1.0)
    assert gen.weight.grad is not None and gen.weight.grad.abs().sum() > 0
    assert critic.weight.grad is None and reader.weight.grad is None
    assert stats["ctc_scale"] == pytest.approx(stats["std_grad_adv"] / stats["std_grad_ctc"], rel=1e-4)


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


@pytest.mark.parametrize("name", ["tiny", "cpu", "base"])
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
    from .conftest import REPO
    from htr_augment.config import ConfigError
    from htr_augment.gan.config import load_gan_config
    cpu = load_gan_config(REPO / "configs" / "gan" / "cpu.toml")
    alpha3 = load_gan_config(REPO / "configs" / "gan" / "cpu_alpha3.toml")
    assert alpha3["train"].pop("alpha") == 3.0 and cpu["train"].pop("alpha") == 1.0
    assert alpha3 == cpu  # everything else comes from cpu.toml
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
