"""The handwriting GAN's networks (Alonso, Moysset & Messina, ICDAR 2019; layout after ScrabbleGAN,
style encoder after HiGAN+ / GANwriting).

TextEncoder: characters -> embeddings -> BiLSTM -> one vector per character, so any
word length works. Generator: each character's vector, with a chunk of the style
vector, becomes a (C, h0, w0) patch; the patches sit side by side along the width
(each character owns `px_per_char` pixels of the output) and up-sampling residual
blocks with style-conditioned normalisation and spectral norm grow them to the
image, their 3x3 convolutions giving neighbouring characters overlapping receptive
fields. The normalisation is masked AdaIN (per word, over its valid columns only), so a
word never depends on its batch mates or their padding, and the EMA generator needs no
standing statistics; `norm = "batch"` keeps the first generators' conditional batch norm.
StyleEncoder: a real word image -> a style vector (mean and log-variance, a VAE), so G can
write new text in the hand of a real word. Discriminator: fully convolutional, spectral
norm, any width; its features are averaged over the word's valid columns and one linear
(one bias) scores the word, so the score does not grow with the word's width.
"""
from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm as SN

from recognizer.model import column_keep, column_mask


class TextEncoder(nn.Module):
    def __init__(self, num_classes: int, embed_dim: int, hidden: int, layers: int = 1):
        super().__init__()
        self.embed = nn.Embedding(num_classes, embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.out_dim = 2 * hidden

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) padded with 0 -> (B, L, 2*hidden), zero past each length."""
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(tokens), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        return out


class ConditionalBatchNorm(nn.Module):
    """BatchNorm whose scale and shift come from the style vector."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = SN(nn.Linear(cond_dim, channels))
        self.bias = SN(nn.Linear(cond_dim, channels))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        g = 1 + self.gain(cond)[:, :, None, None]
        b = self.bias(cond)[:, :, None, None]
        return self.bn(x) * g + b


def masked_moments(x: torch.Tensor, widths: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per word and channel: mean and std of x (B, C, H, W) over its first `widths` columns."""
    keep = column_keep(x.shape[-1], widths).to(x.dtype)[:, None, None, :]
    n = (widths.clamp(min=1) * x.shape[2]).to(x.dtype)[:, None, None, None]
    mean = (x * keep).sum((2, 3), keepdim=True) / n
    var = (((x - mean) * keep) ** 2).sum((2, 3), keepdim=True) / n
    return mean, (var + eps).sqrt()


class MaskedAdaIN(nn.Module):
    """Instance norm over a word's valid columns, then a style-driven scale and shift."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.gain = SN(nn.Linear(cond_dim, channels))
        self.bias = SN(nn.Linear(cond_dim, channels))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        mean, std = masked_moments(x, widths)
        return (x - mean) / std * (1 + self.gain(cond)[:, :, None, None]) + self.bias(cond)[:, :, None, None]


class BatchNormCond(ConditionalBatchNorm):
    """ConditionalBatchNorm with MaskedAdaIN's call signature (widths unused)."""

    def forward(self, x: torch.Tensor, cond: torch.Tensor, widths: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x, cond)


NORMS = {"adain": MaskedAdaIN, "batch": BatchNormCond}


class UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cond_dim: int, norm: str = "adain"):
        super().__init__()
        self.bn1 = NORMS[norm](cin, cond_dim)
        self.conv1 = SN(nn.Conv2d(cin, cout, 3, padding=1))
        self.bn2 = NORMS[norm](cout, cond_dim)
        self.conv2 = SN(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = SN(nn.Conv2d(cin, cout, 1))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        """`widths`: each word's valid columns in x. Columns beyond are zeroed before every
        convolution, so in eval mode a word is the same whatever its batch is padded to."""
        w2 = widths * 2
        h = F.interpolate(column_mask(F.relu(self.bn1(x, cond, widths)), widths), scale_factor=2)
        h = self.conv2(column_mask(F.relu(self.bn2(self.conv1(h), cond, w2)), w2))
        return column_mask(h + self.skip(F.interpolate(x, scale_factor=2)), w2)


class Generator(nn.Module):
    """(text tokens, lengths, z) -> image (B, 1, H, px_per_char * L_max) in [-1, 1] (tanh).

    Width past a word's own `px_per_char * length` is set to background (-1)."""

    def __init__(self, num_classes: int, *, height: int = 32, px_per_char: int = 16, base: int = 32,
                 channel_mult: tuple[int, ...] = (8, 4, 2), z_dim: int = 32, embed_dim: int = 64,
                 text_hidden: int = 64, text_layers: int = 1, norm: str = "adain", char_style: bool = False,
                 char_noise: int = 0):
        super().__init__()
        n_up = len(channel_mult)
        self.h0, self.w0 = height >> n_up, px_per_char >> n_up
        if self.h0 << n_up != height or self.w0 << n_up != px_per_char or self.w0 < 1:
            raise ValueError(f"height {height} and px_per_char {px_per_char} must be multiples of 2**{n_up}")
        self.height, self.px_per_char, self.z_dim = height, px_per_char, z_dim
        self.chunk = z_dim // (n_up + 1)  # BigGAN-style hierarchical noise: one chunk per stage
        if self.chunk < 1:
            raise ValueError(f"z_dim {z_dim} too small for {n_up + 1} noise chunks")
        self.text = TextEncoder(num_classes, embed_dim, text_hidden, text_layers)
        channels = [base * m for m in channel_mult] + [base * channel_mult[-1] // 2]
        self.c0 = channels[0]
        self.project = SN(nn.Linear(self.text.out_dim + self.chunk, self.c0 * self.h0 * self.w0))
        if norm not in NORMS:
            raise ValueError(f"generator norm {norm!r}: expected one of {sorted(NORMS)}")
        self.norm = norm
        self.blocks = nn.ModuleList(UpBlock(channels[i], channels[i + 1], self.chunk, norm) for i in range(n_up))
        self.out_bn = nn.BatchNorm2d(channels[-1]) if norm == "batch" else None
        self.out_conv = SN(nn.Conv2d(channels[-1], 1, 3, padding=1))
        # Style -> per-feature scale and shift of the character vectors (config generator.char_style).
        # Zero weights: the identity at first; no spectral norm (that of a zero matrix is undefined).
        self.char_film = nn.Linear(self.chunk, 2 * self.text.out_dim) if char_style else None
        if self.char_film is not None:
            nn.init.zeros_(self.char_film.weight)
            nn.init.zeros_(self.char_film.bias)
        # Per-character noise (config generator.char_noise dims; 0: none): each letter of a word gets
        # its own noise vector, added to its patch, so one hand can vary its letters. Near zero at
        # first (not zero: a distance between two noises' words has no gradient where they are equal).
        self.char_noise = char_noise
        self.char_noise_proj = nn.Linear(char_noise, self.c0 * self.h0 * self.w0) if char_noise else None
        if self.char_noise_proj is not None:
            nn.init.normal_(self.char_noise_proj.weight, std=1e-3)
            nn.init.zeros_(self.char_noise_proj.bias)

    def seeded_noise(self, tokens: torch.Tensor, lengths: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(B, L, char_noise) noise drawn from a hash of each word's style and text: the same word
        in the same style is the same image, whatever its batch (inference; training draws afresh)."""
        out = torch.zeros(tokens.shape[0], tokens.shape[1], self.char_noise)
        for b, n in enumerate(lengths.tolist()):
            key = z[b].detach().float().cpu().numpy().tobytes() + tokens[b, :n].cpu().numpy().tobytes()
            gen = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1)
            out[b, :n] = torch.randn(n, self.char_noise, generator=gen)
        return out.to(z.device)

    def widths(self, lengths: torch.Tensor) -> torch.Tensor:
        return lengths * self.px_per_char

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, z: torch.Tensor,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """noise (B, L, char_noise): the letters' own noise (generator.char_noise); default
        seeded_noise. Ignored by a generator without it."""
        B, L = tokens.shape
        zs = z[:, : self.chunk * (len(self.blocks) + 1)].split(self.chunk, dim=1)
        chars = self.text(tokens, lengths)  # (B, L, D)
        if self.char_film is not None:
            scale, shift = self.char_film(zs[0]).chunk(2, dim=1)
            chars = chars * (1 + scale[:, None, :]) + shift[:, None, :]
        h = self.project(torch.cat([chars, zs[0][:, None, :].expand(B, L, -1)], dim=2))
        if self.char_noise_proj is not None:
            h = h + self.char_noise_proj(self.seeded_noise(tokens, lengths, z) if noise is None else noise)
        # (B, L, C*h0*w0) -> (B, C, h0, L*w0): character i owns columns [i*w0, (i+1)*w0).
        h = h.view(B, L, self.c0, self.h0, self.w0).permute(0, 2, 3, 1, 4).reshape(B, self.c0, self.h0, L * self.w0)
        widths = lengths * self.w0
        h = column_mask(h, widths)  # padding characters contribute nothing
        for block, zc in zip(self.blocks, zs[1:]):
            h = block(h, zc, widths)
            widths = widths * 2
        if self.out_bn is not None:
            h = self.out_bn(h)
        else:
            mean, std = masked_moments(h, widths)
            h = (h - mean) / std
        img = torch.tanh(self.out_conv(column_mask(F.relu(h), widths)))
        valid = column_mask(torch.ones_like(img), widths)
        return img * valid - (1 - valid)  # beyond the word: background (-1)


class DownBlock(nn.Module):
    def __init__(self, cin: int, cout: int, first: bool = False):
        super().__init__()
        self.first = first
        self.conv1 = SN(nn.Conv2d(cin, cout, 3, padding=1))
        self.conv2 = SN(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = SN(nn.Conv2d(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(h))), 2)
        return h + F.avg_pool2d(self.skip(x), 2)


class Discriminator(nn.Module):
    """Fully convolutional critic: image (B, 1, H, W) + widths -> one score per image.

    pool = "mean": ReLU features summed over rows and averaged over the word's valid columns,
    then one SN linear with one bias (BigGAN's head; HiGAN+ divides its masked sum by the
    number of characters, which at one column per character is the same). The score is then
    independent of the word's width. pool = "sum" keeps the first generators' head (a 1x1
    conv summed over positions, bias included), whose score was mostly the width.

    mbstd_group = g > 0 (pool "mean" only): minibatch standard deviation (after StyleGAN). The
    batch is cut into consecutive groups of g words; each word's score also gets a linear term
    of its group's per-channel standard deviation of the pooled features, so D can tell a batch
    of words that all share one hand from a batch of real writers. Zero-initialised: a trained
    D keeps its scores (train --init-from). Callers keep real and generated words in separate
    groups (the trainer concatenates whole batches of g-multiples)."""

    def __init__(self, *, base: int = 32, channel_mult: tuple[int, ...] = (1, 2, 4, 8), pool: str = "mean",
                 mbstd_group: int = 0):
        super().__init__()
        if pool not in ("mean", "sum"):
            raise ValueError(f"discriminator pool {pool!r}: expected 'mean' or 'sum'")
        if mbstd_group < 0 or (mbstd_group and pool != "mean"):
            raise ValueError(f"discriminator mbstd_group {mbstd_group}: expected 0 (off) or a group size with pool 'mean'")
        chans = [1] + [base * m for m in channel_mult]
        self.blocks = nn.Sequential(*[DownBlock(chans[i], chans[i + 1], first=i == 0) for i in range(len(channel_mult))])
        self.pool = pool
        self.head = SN(nn.Conv2d(chans[-1], 1, 1)) if pool == "sum" else SN(nn.Linear(chans[-1], 1))
        self.stages = len(channel_mult)  # each: conv, act, conv, act, pool (5 modules of self.net)
        self.stride = 2 ** self.stages
        self.mbstd_group = mbstd_group
        # No spectral norm: that of a zero matrix is undefined (as for Generator.char_film).
        self.mbstd = nn.Linear(chans[-1], 1, bias=False) if mbstd_group else None
        if self.mbstd is not None:
            nn.init.zeros_(self.mbstd.weight)

    def valid_columns(self, widths: torch.Tensor) -> torch.Tensor:
        return ((widths + self.stride - 1) // self.stride).clamp(min=1)

    def forward(self, images: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(images))
        cols = self.valid_columns(widths)
        valid = column_keep(h.shape[-1], cols).to(h.dtype)
        if self.pool == "sum":
            return (self.head(h).sum(dim=2)[:, 0] * valid).sum(1)
        feats = (h.sum(dim=2) * valid[:, None, :]).sum(2) / cols[:, None].to(h.dtype)  # (B, C)
        score = self.head(feats)[:, 0]
        if self.mbstd is not None:
            score = score + self.mbstd(group_std(feats, self.mbstd_group))[:, 0]
        return score


def group_std(x: torch.Tensor, group: int) -> torch.Tensor:
    """(B, C) -> (B, C): each row replaced by the per-column standard deviation of its group of
    `group` consecutive rows (the last group may be smaller; a group of one gives about 0)."""
    parts = [x[s:s + group] for s in range(0, x.shape[0], group)]
    return torch.cat([(p.var(0, unbiased=False) + 1e-8).sqrt().expand_as(p) for p in parts])


class WordTrunk(nn.Module):
    """Word image (B, 1, H, W) in G's geometry + widths -> features (B, C) of the whole word.

    Plain convolutions (no batch statistics: a word's features must not depend on its batch),
    LeakyReLU, average pooling to 1/16 of the width, then the mean over the valid columns.
    Shared by the style encoder and the writer classifier; `out` is their linear head."""

    def __init__(self, outputs: int, *, base: int = 16, channel_mult: tuple[int, ...] = (1, 2, 4, 8)):
        super().__init__()
        chans = [1] + [base * m for m in channel_mult]
        layers: list[nn.Module] = []
        for i in range(len(channel_mult)):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1), nn.LeakyReLU(0.2),
                       nn.Conv2d(chans[i + 1], chans[i + 1], 3, padding=1), nn.LeakyReLU(0.2), nn.AvgPool2d(2)]
        self.net = nn.Sequential(*layers)
        for m in self.net:
            if isinstance(m, nn.Conv2d):  # He init for LeakyReLU: with PyTorch's default the signal
                nn.init.kaiming_normal_(m.weight, a=0.2)  # fades over 8 layers and E learned little
                nn.init.zeros_(m.bias)
        self.stages = len(channel_mult)  # each: conv, act, conv, act, pool (5 modules of self.net)
        self.stride = 2 ** self.stages
        self.out = nn.Linear(chans[-1], outputs)

    def features(self, images: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        h, valid = self.feature_map(images, widths)
        h = h.mean(dim=2)  # (B, C, W')
        return (h * valid[:, None, :]).sum(2) / valid.sum(1, keepdim=True).to(h.dtype)

    def feature_map(self, images: torch.Tensor, widths: torch.Tensor,
                    stages: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The map after `stages` of the down-sampling stages (default: all), (B, C, H', W'), and
        its valid columns (B, W') as a bool mask."""
        stages = self.stages if stages is None else stages
        if not 1 <= stages <= self.stages:
            raise ValueError(f"feature stage {stages}: this trunk has {self.stages}")
        # Background (-1) beyond the widest word too, wider than half the receptive field (~76 px):
        # otherwise the convolutions' zero padding (mid-grey) reached only the widest word of a
        # batch, and a word's features depended on its batch mates.
        pad = -images.shape[-1] % self.stride + 3 * self.stride
        h = self.net[:5 * stages](F.pad(images, (0, pad), value=-1.0))
        stride = 2 ** stages
        cols = ((widths + stride - 1) // stride).clamp(min=1)
        return h, column_keep(h.shape[-1], cols)


class StyleEncoder(WordTrunk):
    """Real word image (B, 1, H, W) in G's geometry + widths -> (mu, logvar), each (B, style_dim)."""

    def __init__(self, style_dim: int, *, base: int = 16, channel_mult: tuple[int, ...] = (1, 2, 4, 8)):
        super().__init__(2 * style_dim, base=base, channel_mult=channel_mult)
        self.style_dim = style_dim

    def forward(self, images: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.out(self.features(images, widths)).chunk(2, dim=1)
        return mu, logvar.clamp(-8.0, 4.0)


class WriterClassifier(WordTrunk):
    """Word image (B, 1, H, W) in G's geometry + widths -> logits over the training writers.

    Trained on real words only; G is asked to write new text in E(x) so that it classifies
    as x's writer (HiGAN+'s writer-identity loss): E's codes must then carry the hand, and
    the styles drawn from them differ as writers do."""

    def __init__(self, writers: int, *, base: int = 16, channel_mult: tuple[int, ...] = (1, 2, 4, 8)):
        super().__init__(writers, base=base, channel_mult=channel_mult)

    def forward(self, images: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(images, widths))
