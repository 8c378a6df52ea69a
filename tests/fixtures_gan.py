"""A tiny untrained generator checkpoint for tests of everything that consumes one."""
import torch

from htr_augment.alphabet import Alphabet
from htr_augment.gan.config import load_gan_config
from htr_augment.gan.word_generator import build_generator, build_style_encoder
from htr_augment.training import make_checkpoint, save_checkpoint

from .conftest import REPO

ALPHABET = Alphabet("abcdefghijklmnopqrstuvwxyzéè")


def tiny_generator_checkpoint(path, seed=0, style_encoder=False, extra=None):
    """style_encoder=True adds an (untrained) style encoder, as checkpoints trained with [style] have;
    `extra` adds to the checkpoint's extra dict."""
    torch.manual_seed(seed)
    config = load_gan_config(REPO / "configs" / "gan" / "tiny.toml")
    gen = build_generator(config, len(ALPHABET))
    with torch.no_grad():  # one training-mode pass gives the batch-norm layers real statistics
        tokens = torch.randint(1, len(ALPHABET), (8, 5))
        gen(tokens, torch.full((8,), 5), torch.randn(8, gen.z_dim))
    models = {"generator_ema": gen.state_dict()}
    if style_encoder:
        models["style_encoder_ema"] = build_style_encoder(config).state_dict()
    ckpt = make_checkpoint("gan", config, ALPHABET, 0, 0, models=models,
                           extra={"natural_px_per_char": 11.0, "data_credit": "test", **(extra or {})})
    save_checkpoint(ckpt, path)
    return path
