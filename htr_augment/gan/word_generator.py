"""WordGenerator: the trained generator as a library call.

    from htr_augment.gan import WordGenerator
    gen = WordGenerator.load()                # the weights shipped in the package
    images = gen.generate(["bonjour", "monde"], seed=0)   # one style for both words
    images = gen.generate(["bonjour"], style=[word_image])  # in the hand of a real word image
"""
from __future__ import annotations

import os
import random
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from ..alphabet import Alphabet, AlphabetError, normalize_text
from ..images import check_ink_floor, check_ink_quantile, check_margin, drop_faint_ink, pad_batch, stretch_ink
from ..training.checkpoint import CheckpointError, load_checkpoint
from .data import encode_texts
from .models import Discriminator, Generator, StyleEncoder

PACKAGE_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "generator.pt"


def build_generator(config: dict, num_classes: int) -> Generator:
    g, d = config["generator"], config["data"]
    return Generator(num_classes, height=d["height"], px_per_char=d["px_per_char"], base=g["base"],
                     channel_mult=tuple(g["channel_mult"]), z_dim=g["z_dim"], embed_dim=g["embed_dim"],
                     text_hidden=g["text_hidden"], text_layers=g["text_layers"],
                     norm=g.get("norm", "batch"),  # configs older than the key: batch norm
                     char_style=g.get("char_style", False), char_noise=g.get("char_noise", 0))


def build_discriminator(config: dict) -> Discriminator:
    d = config["discriminator"]
    return Discriminator(base=d["base"], channel_mult=tuple(d["channel_mult"]), pool=d.get("pool", "sum"),
                         mbstd_group=d.get("mbstd_group", 0))


def build_style_encoder(config: dict) -> StyleEncoder:
    return StyleEncoder(config["generator"]["z_dim"], base=config["style"]["base"])


@torch.no_grad()
def fit_style_prior(codes: torch.Tensor, ridge: float = 1e-3) -> dict:
    """Mean and Cholesky factor of a Gaussian fitted to style codes (N, z_dim), as plain lists
    (a checkpoint holds builtins and tensors only)."""
    codes = codes.double()
    mean = codes.mean(0)
    cov = torch.cov(codes.T) + ridge * torch.eye(codes.shape[1], dtype=codes.dtype)
    return {"mean": mean.float().tolist(), "chol": torch.linalg.cholesky(cov).float().tolist(),
            "words": int(codes.shape[0])}


def style_prior_tensors(prior: dict | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(mean, Cholesky factor) of a stored style prior (fit_style_prior), or None."""
    return (torch.tensor(prior["mean"]), torch.tensor(prior["chol"])) if prior else None


def check_style_temperature(t: float) -> float:
    """A style temperature (WordGenerator.prior_style) as a float; a clear error if not positive."""
    t = float(t)
    if not t > 0:
        raise ValueError(f"style temperature must be positive, got {t}")
    return t


def from_style_prior(eps: torch.Tensor, prior: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Standard normal draws eps (..., z_dim) mapped to the prior's Gaussian (unchanged without one)."""
    return eps if prior is None else prior[0] + eps @ prior[1].T


# Above this CER of the independent evaluator on generated words, the weights are flagged.
ILLEGIBLE_CER = 0.5


def warn_if_illegible(metrics: dict | None, path: Path) -> None:
    """Users of the default weights should know when their own evaluation says they are not
    legible yet (python -m htr_augment.gan.evaluate, stored by htr_augment.gan.export)."""
    try:
        cer = float(metrics["fidelity"]["gan"]["all"]["cer"])
    except (TypeError, KeyError, ValueError):
        return
    if cer > ILLEGIBLE_CER:
        warnings.warn(f"{path}: an independent recognizer reads these generated words at CER {cer:.2f} "
                      "(stored evaluation): a preview, not yet legible handwriting; see the README",
                      stacklevel=3)


class WordGenerator:
    """Writes words with a trained (EMA) generator. Images follow htr_augment.images: ink = 1."""

    def __init__(self, generator: Generator, alphabet: Alphabet, config: dict, *,
                 natural_px_per_char: float | None = None, info: dict | None = None, device="cpu",
                 style_encoder: StyleEncoder | None = None):
        self.generator = generator.to(device).eval()
        self.style_encoder = style_encoder.to(device).eval() if style_encoder is not None else None
        self.alphabet = alphabet
        self.config = config
        self.device = torch.device(device)
        # G writes px_per_char pixels per character; real handwriting of the training set
        # averaged natural_px_per_char at the same height, and outputs are resized to it.
        self.natural_px_per_char = natural_px_per_char
        self.info = info or {}
        # (mean, Cholesky factor) of the style encoder's codes of real training words, if stored.
        self.style_prior = style_prior_tensors(self.info.get("style_prior"))
        # Prior styles are drawn at this multiple of the prior's spread (1: the fitted prior itself);
        # above 1, further from the typical hand: more varied, less legible words. Exported weights
        # may carry the temperature chosen for them (gan.export --style-temperature).
        self.style_temperature = check_style_temperature(self.info.get("style_temperature", 1.0))
        # Whole lines take one style for every word, so one far-out style spoils a line: lines may
        # have their own default (gan.export --line-style-temperature), else the words' one.
        self.line_style_temperature = check_style_temperature(
            self.info.get("line_style_temperature", self.style_temperature))
        # Ink quantile of every written word set to full ink (images.stretch_ink), if stored
        # (gan.export --ink-quantile): G reproduces the faint grey of real words at 32 px; pen-dark
        # strokes may teach a recognizer more (README, validation study). None: G's own ink.
        q = self.info.get("ink_quantile")
        self.ink_quantile = check_ink_quantile(q) if q is not None else None
        # Then ink below this floor made background (images.drop_faint_ink; gan.export --ink-floor):
        # G's words carry more grey haze around their strokes than real ones, yet without it they
        # taught a recognizer less (README, stage 15), so exports store none unless asked. 0: none.
        self.ink_floor = check_ink_floor(self.info.get("ink_floor", 0.0))
        # Background columns added on each side of every word, as a fraction of its height
        # (gan.export --margin), as segmented real words carry; at 0.1 the words taught a recognizer
        # less (README), so exports store none unless asked. Lines trim words to their ink anyway.
        self.margin = check_margin(self.info.get("margin", 0.0))
        # Real writers' mean widths per character (sorted), if stored: each style gets one of them.
        widths = self.info.get("writer_px_per_char") or []
        self.writer_widths = torch.tensor(widths, dtype=torch.float64) if len(widths) >= 2 else None

    def style_px_per_char(self, z: torch.Tensor) -> torch.Tensor | None:
        """Width per character of each style z (N, z_dim): the quantile of real writers' widths at
        Phi of a fixed projection of z's whitened code (standard normal under the prior), so one
        style keeps one width and styles spread like the writers. None without stored widths."""
        if self.writer_widths is None:
            return None
        eps = z.double()
        if self.style_prior is not None:
            mean, chol = (t.double() for t in self.style_prior)
            eps = torch.linalg.solve_triangular(chol, (eps - mean).T, upper=False).T
        v = torch.randn(self.z_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        q = 0.5 * (1 + torch.erf((eps @ (v / v.norm())) / 2 ** 0.5))  # uniform under the prior
        return torch.quantile(self.writer_widths, q)

    @property
    def height(self) -> int:
        return self.generator.height

    @property
    def z_dim(self) -> int:
        return self.generator.z_dim

    @classmethod
    def load(cls, checkpoint: str | os.PathLike | None = None, device: str = "cpu") -> "WordGenerator":
        """Load a GAN checkpoint (training or exported); default: the package's shipped weights."""
        path = Path(checkpoint) if checkpoint else PACKAGE_WEIGHTS
        if checkpoint is None and not path.is_file():
            raise CheckpointError(f"no generator weights are shipped at {path} yet; pass a checkpoint "
                                  "trained with python -m htr_augment.gan.train")
        ckpt = load_checkpoint(path, map_location="cpu", kind="gan")
        models = ckpt["models"]
        key = "generator_ema" if "generator_ema" in models else "generator"
        if key not in models:
            raise CheckpointError(f"{path}: GAN checkpoint without generator weights")
        alphabet = Alphabet(ckpt["alphabet"])
        gen = build_generator(ckpt["config"], len(alphabet))
        gen.load_state_dict(models[key])
        encoder = None
        e_key = "style_encoder_ema" if "style_encoder_ema" in models else "style_encoder"
        if e_key in models:
            encoder = build_style_encoder(ckpt["config"])
            encoder.load_state_dict(models[e_key])
        extra = ckpt.get("extra", {})
        if checkpoint is None:
            warn_if_illegible(extra.get("metrics"), path)
        return cls(gen, alphabet, ckpt["config"], natural_px_per_char=extra.get("natural_px_per_char"),
                   info={"path": str(path), "step": ckpt["step"], **extra}, device=device, style_encoder=encoder)

    def check(self, texts: list[str]) -> list[str]:
        texts = [normalize_text(t) for t in texts]
        for t in texts:
            if not t:
                raise ValueError("cannot generate an empty word")
            missing = self.alphabet.missing(t)
            if missing:
                raise AlphabetError(missing, t, "the text to generate (the generator's alphabet: "
                                    f"{''.join(self.alphabet.chars)!r})")
        return texts

    def sample_z(self, n: int, seed: int | None = None) -> torch.Tensor:
        """n styles. With a stored style prior, drawn from the Gaussian fitted to the style codes of
        real training words (ex-post density estimation, Ghosh et al. 2020): G was trained on those
        codes, and they need not fill N(0, I); otherwise from N(0, I)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        return self.prior_style(torch.randn(n, self.z_dim, generator=gen))

    def resolve_style_temperature(self, temperature: float | None, lines: bool = False) -> float:
        """`temperature`, checked; when None the generator's own (self.style_temperature, or for
        whole lines self.line_style_temperature)."""
        if temperature is None:
            return self.line_style_temperature if lines else self.style_temperature
        return check_style_temperature(temperature)

    def prior_style(self, eps: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """Standard normal draws eps (..., z_dim) -> styles of the prior, at `temperature` times its
        spread (default: self.style_temperature)."""
        return from_style_prior(eps * self.resolve_style_temperature(temperature), self.style_prior)

    @property
    def has_style_encoder(self) -> bool:
        return self.style_encoder is not None

    def encode_styles(self, images: list, texts: list[str | None] | None = None) -> torch.Tensor:
        """Style vectors (N, z_dim) of real word images ((1, H, W) or (H, W) tensors, ink = 1).

        Each image is brought to G's geometry: its height, and px_per_char pixels per character
        of its text; without a text the character count is estimated from its width and the
        training words' mean width per character."""
        return self._encode_styles(images, texts)[0]

    @torch.no_grad()
    def _encode_styles(self, images: list, texts: list[str | None] | None) -> tuple[torch.Tensor, list]:
        """encode_styles, and each image's own width per character at G's height (None without text)."""
        if self.style_encoder is None:
            raise ValueError("these generator weights have no style encoder (trained before styles "
                             "from images existed): use z or seed instead of style")
        if not images:
            raise ValueError("style: give at least one word image")
        texts = list(texts) if texts is not None else [None] * len(images)
        if len(texts) != len(images):
            raise ValueError(f"style: {len(images)} images but {len(texts)} texts")
        px, H = self.generator.px_per_char, self.height
        canon, measured = [], []
        for i, (img, text) in enumerate(zip(images, texts)):
            img = torch.as_tensor(img, dtype=torch.float32)
            img = img[None] if img.dim() == 2 else img
            if img.dim() != 3 or img.shape[0] != 1 or min(img.shape[1:]) < 2:
                raise ValueError(f"style image {i}: expected a (1, H, W) or (H, W) grayscale word image, "
                                 f"got shape {tuple(img.shape)}")
            w_at_h = img.shape[2] * H / img.shape[1]
            n = len(text) if text else max(1, round(w_at_h / (self.natural_px_per_char or px)))
            measured.append(w_at_h / n if text else None)
            canon.append(F.interpolate(img[None], size=(H, px * n), mode="bilinear", align_corners=False,
                                       antialias=True)[0].clamp(0, 1))
        batch, widths = pad_batch(canon)
        mu, _ = self.style_encoder((batch * 2 - 1).to(self.device), widths.to(self.device))
        return mu.float().cpu(), measured

    @torch.no_grad()
    def generate(self, texts: str | list[str], z: torch.Tensor | None = None, seed: int | None = None,
                 natural_width: bool = True, batch_size: int = 64, style: list | None = None) -> list[torch.Tensor]:
        """Images (1, H, W) for `texts`, ink = 1, background = 0.

        `z` of shape (z_dim,) or (1, z_dim) writes every word in one style (one hand);
        (N, z_dim) gives each word its own. `style`: one or a few real word images (see
        encode_styles; a list of (image, text) pairs gives their texts too): every word is
        written in their hand (the mean of their style vectors). Without either, one style is
        drawn from `seed` for all words. `natural_width` resizes from G's fixed pixels per
        character to the style's own width per character (style_px_per_char; with `style`
        images and their texts, the images' width), or, for weights without stored writer
        widths, the training data's mean width per character."""
        texts = self.check([texts] if isinstance(texts, str) else list(texts))
        px_style = None
        if style is not None:
            if z is not None:
                raise ValueError("give z or style, not both")
            pairs = [s if isinstance(s, tuple) else (s, None) for s in style]
            z, measured = self._encode_styles([p[0] for p in pairs], [p[1] for p in pairs])
            z = z.mean(0, keepdim=True)
            known = [w for w in measured if w is not None]
            if known:  # the hand's own width per character, when the style images' texts are given
                px_style = torch.full((len(texts),), sum(known) / len(known), dtype=torch.float64)
        if z is None:
            z = self.sample_z(1, seed)
        z = z.reshape(-1, self.z_dim).float()
        if z.shape[0] == 1:
            z = z.expand(len(texts), -1)
        if z.shape[0] != len(texts):
            raise ValueError(f"z has {z.shape[0]} styles for {len(texts)} texts (give 1 or {len(texts)})")
        if natural_width and px_style is None:
            px_style = self.style_px_per_char(z)
        out: list[torch.Tensor] = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            tokens, lengths, _ = encode_texts(chunk, self.alphabet)
            imgs = self.generator(tokens.to(self.device), lengths.to(self.device), z[start:start + len(chunk)].to(self.device))
            imgs = (imgs.float().cpu() + 1) / 2  # tanh space -> ink = 1, background = 0
            for i, (img, n) in enumerate(zip(imgs, lengths.tolist()), start):
                img = img[:, :, : n * self.generator.px_per_char]
                ppc = float(px_style[i]) if px_style is not None else self.natural_px_per_char
                if natural_width and ppc:
                    w = max(1, round(n * ppc))
                    img = F.interpolate(img[None], size=(img.shape[1], w), mode="bilinear", align_corners=False)[0]
                img = img.clamp(0, 1)
                if self.ink_quantile:
                    img = stretch_ink(img, self.ink_quantile)
                img = drop_faint_ink(img, self.ink_floor)
                pad = round(self.margin * img.shape[1])
                out.append(F.pad(img, (pad, pad)) if pad else img)
        return out

    def generate_line(self, text: str, z: torch.Tensor | None = None, seed: int | None = None, *,
                      layout=None, stats=None, height: int | None = None) -> torch.Tensor:
        """A line (1, height, W) in one hand: every word generated with the one style z (or
        drawn from `seed`), set with gaps, baseline offsets and slant changes of `layout`
        (htr_augment.line_stats.LineLayout), by default drawn from `seed` and `stats` (real
        writers' measured distributions; default: those shipped with the weights).
        Height: the generator's unless given. SyntheticLineDataset item i is
        generate_line(text, z, layout=layout, height=height) for its plan(i)."""
        from ..line_stats import LineStats
        from ..lines import compose_line, to_line_tensor

        words = text.split()
        if not words:
            raise ValueError("cannot generate an empty line")
        stats = stats if isinstance(stats, LineStats) else LineStats.load(stats)
        if layout is None:
            layout = stats.sample_layout(len(words), random.Random(seed))
        images = self.generate(words, z=z, seed=seed)
        return to_line_tensor(compose_line([im[0].numpy() for im in images], layout, stats), height or self.height)
