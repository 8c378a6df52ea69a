"""CRNN line/word recognizer after Retsinas et al. 2022, "Best practices for a handwritten
text recognition system" (DAS 2022): a residual CNN, column max-pooling over the remaining
height, a BiLSTM head with CTC output, and an auxiliary 1-D conv CTC "shortcut" head on
the CNN features that speeds up and stabilises training (weighted 0.1 in the loss).

Variable widths: a batch is padded with background (0) on the right. Each sample's valid
width is tracked through every down-sampling step and the padded columns are zeroed after
every conv layer (BatchNorm's shift would otherwise make them non-zero and leak into valid
columns at the boundary); the BiLSTM reads packed sequences. So, in eval mode, a sample's
outputs do not depend on how wide the rest of its batch is.
"""
from __future__ import annotations

import os
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from htr_augment.alphabet import Alphabet
from htr_augment.config import merge
from htr_augment.training.checkpoint import CheckpointError, load_checkpoint

from .config import DEFAULTS, horizontal_stride

MODEL_NAME = "recognizer"  # key of the weights in a checkpoint's "models"


class RecognizerOutput(NamedTuple):
    log_probs: torch.Tensor            # (T, B, C) log-softmax over classes, blank = 0
    lengths: torch.Tensor              # (B,) valid frames per sample (long)
    aux_log_probs: torch.Tensor | None  # (T, B, C) from the shortcut head, or None


def column_keep(width: int, lengths: torch.Tensor) -> torch.Tensor:
    """(B, width) bool: the columns before each sample's length."""
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


def column_mask(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero the columns of x (B, C, H, W) at or beyond each sample's length."""
    return x * column_keep(x.shape[-1], lengths.to(x.device))[:, None, None, :].to(x.dtype)


def _ceil_div(lengths: torch.Tensor, d: int) -> torch.Tensor:
    return torch.div(lengths + d - 1, d, rounding_mode="floor")


class ResBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus identity (or 1x1 projection), then ReLU; masked."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.proj = None if cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        y = column_mask(F.relu(self.bn1(self.conv1(x))), lengths)
        y = self.bn2(self.conv2(y))
        skip = x if self.proj is None else self.proj(x)
        return column_mask(F.relu(y + skip), lengths)


class CRNN(nn.Module):
    """`CRNN(config, num_classes)`: config is a full recognizer config or its [model] table."""

    def __init__(self, config: dict[str, Any], num_classes: int):
        super().__init__()
        cfg = merge(DEFAULTS["model"], config.get("model", config), "model")
        if cfg["stem_kernel"] % 2 != 1:
            raise ValueError("model.stem_kernel must be odd (so that frame lengths are ceil(width / stride))")
        self.config = cfg
        self.num_classes = num_classes
        self.stride = horizontal_stride(cfg)  # input columns per output frame
        sh, sw = cfg["stem_stride"]
        k = cfg["stem_kernel"]
        c = cfg["stem_channels"]
        self.stem = nn.Sequential(nn.Conv2d(1, c, k, stride=(sh, sw), padding=k // 2, bias=False), nn.BatchNorm2d(c))
        self.stem_stride_w = sw
        self.stages = nn.ModuleList()
        for blocks, channels in cfg["stages"]:
            stage = nn.ModuleList()
            for _ in range(blocks):
                stage.append(ResBlock(c, channels))
                c = channels
            self.stages.append(stage)
        self.pools = [tuple(p) for p in cfg["pools"]]
        self.feature_channels = c
        hidden = cfg["lstm_hidden"]
        # lstm_layers = 0: a CNN-only recognizer (its frames see only the CNN's receptive field).
        # ScrabbleGAN's ablation found such an R gives the GAN's most useful words: it cannot read
        # a word from context without its strokes.
        self.lstm = nn.LSTM(c, hidden, num_layers=cfg["lstm_layers"], bidirectional=True,
                            dropout=cfg["dropout"] if cfg["lstm_layers"] > 1 else 0.0) if cfg["lstm_layers"] else None
        self.head = nn.Sequential(nn.Dropout(cfg["dropout"]),
                                  nn.Linear(2 * hidden if self.lstm is not None else c, num_classes))
        self.shortcut = nn.Conv1d(c, num_classes, 3, padding=1) if cfg["shortcut"] else None

    def output_lengths(self, widths: torch.Tensor) -> torch.Tensor:
        """Frames per sample for input widths: ceil(width / stride)."""
        return _ceil_div(widths.long(), self.stride)

    def _cnn(self, images: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, H, W) -> column features (B, C, T) with zeros beyond each length, and lengths (B,)."""
        if images.dim() != 4 or images.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, H, W), got {tuple(images.shape)}")
        widths = widths.to(images.device).long()
        pad = -images.shape[-1] % self.stride  # whole frames only: no floor-mode pooling drops a column
        x = F.pad(images, (0, pad)) if pad else images
        x = column_mask(x, widths)  # anything right of a sample's width is background
        lengths = _ceil_div(widths, self.stem_stride_w)
        x = column_mask(F.relu(self.stem(x)), lengths)
        for i, stage in enumerate(self.stages):
            for block in stage:
                x = block(x, lengths)
            if i < len(self.pools):
                x = F.max_pool2d(x, self.pools[i], self.pools[i])  # padded columns stay 0
                lengths = _ceil_div(lengths, self.pools[i][1])
        return x.amax(dim=2), lengths

    def _rnn(self, cols: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> BiLSTM output (T, B, 2*hidden), zero beyond each length (CNN-only: (T, B, C))."""
        seq = cols.permute(2, 0, 1)
        if self.lstm is None:
            return seq
        packed = pack_padded_sequence(seq, lengths.cpu(), enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, total_length=seq.shape[0])
        return out

    def forward(self, images: torch.Tensor, widths: torch.Tensor) -> RecognizerOutput:
        cols, lengths = self._cnn(images, widths)
        logits = self.head(self._rnn(cols, lengths))
        aux = None
        if self.shortcut is not None:
            aux = F.log_softmax(self.shortcut(cols).permute(2, 0, 1).float(), dim=-1)
        return RecognizerOutput(F.log_softmax(logits.float(), dim=-1), lengths, aux)

    def features(self, images: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        """(B, 2*hidden): the BiLSTM output averaged over each sample's valid frames."""
        cols, lengths = self._cnn(images, widths)
        out = self._rnn(cols, lengths)  # zeros beyond lengths, so a plain sum is the valid sum
        return out.sum(dim=0) / lengths.to(out.device, out.dtype)[:, None]


def load_recognizer(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[CRNN, Alphabet, dict]:
    """A trained recognizer from a checkpoint or a shipped name (recognizer.pretrained, e.g.
    "copiste-words"): (model in eval mode on `device`, alphabet, config)."""
    from .pretrained import resolve
    path = resolve(path)
    ckpt = load_checkpoint(path, map_location="cpu")
    config = ckpt["config"]
    if ckpt["kind"] == "gan":  # a GAN training checkpoint: its auxiliary recognizer R
        if "recognizer" not in ckpt["models"] or "recognizer_model" not in config:
            raise CheckpointError(f"{path}: GAN checkpoint without its recognizer R (an exported generator?)")
        config = config["recognizer_model"]
    alphabet = Alphabet(ckpt["alphabet"])
    model = CRNN(config, len(alphabet))
    model.load_state_dict(ckpt["models"][MODEL_NAME])
    return model.to(device).eval(), alphabet, config
