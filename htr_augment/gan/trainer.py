"""The GAN training loop: D (hinge), R (CTC on real words only), G and the style encoder E.

One iteration consumes one new real batch:
  1. D: hinge loss on DiffAugment-ed real words and generated ones (G not updated); with
     train.w_wid, the writer classifier W: cross-entropy on the real batch's writers (as
     train.w_input has it read them: raw, or with their ink stretched).
  2. R: CTC on the real batch, unless R is frozen; R never sees a generated image in its
     own update. With recognizer.pretrain_steps, R first trains alone for that many
     iterations, in G's geometry.
  3. Every train.g_every-th iteration, G and E: G writes (a) the real words' own texts in
     their encoded styles E(x) (reconstruction, masked L1), (b) random texts in E(x) and
     (c) random texts in z ~ N(0, I) styles (E(G(z, t)) ~ z: latent reconstruction) and,
     with train.w_div, (d) the same texts in a second z, pushed apart (mode seeking). The
     adversarial loss (D), the CTC loss (R in eval mode, so its batch statistics stay those
     of real handwriting), the reconstruction, the latent-reconstruction and, with
     train.w_wid, the writer-identity loss (W: (b) must classify as x's writer) are
     differentiated with respect to the generated images only and balanced by running
     standard deviations (balance.py); a small KL keeps E's codes near G's prior.
  4. The EMA copies of G and E follow.
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from recognizer.losses import ctc_losses
from recognizer.model import CRNN, column_keep

from ..alphabet import Alphabet
from ..data.credit import data_credit
from ..images import encode_png, stretch_ink_batch, to_uint8
from ..training import (CheckpointError, DistInfo, MetricsLogger, all_gather_objects, all_reduce_sum, broadcast_object,
                        check_alphabet, load_checkpoint, make_checkpoint,
                        rng_state, save_checkpoint, seed_everything, set_rng_state, StopRequest, ignore_sigint)
from ..training.ema import EMA
from ..training.lookahead import Lookahead
from ..training.optim_state import load_optimizer_state
from .balance import GradientBalancer
from .contextual import contextual_loss
from .data import CanonicalCollate, TextSampler, encode_texts, px_per_char
from .diffaugment import diff_augment
from .health import discriminator_health, generator_health, map_l1, recognizer_cer, word_l1
from .models import StyleEncoder, WriterClassifier
from .word_generator import (build_discriminator, build_generator, build_style_encoder, fit_style_prior,
                             from_style_prior, style_prior_tensors)

class NonFiniteLoss(RuntimeError):
    pass


def check_finite(losses: dict[str, torch.Tensor], step: int) -> None:
    bad = [k for k, v in losses.items() if not torch.isfinite(v)]
    if bad:
        raise NonFiniteLoss(f"non-finite {', '.join(bad)} at step {step} "
                            f"({', '.join(f'{k}={float(v):.4g}' for k, v in losses.items())})")


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int, world: int) -> list[list[int]]:
    """This rank's batches of one epoch: a seeded permutation, equal shares, full batches only."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    mine = perm[: n - n % world][rank::world]
    return [mine[i:i + batch_size] for i in range(0, len(mine) - batch_size + 1, batch_size)]


# Modules a config may add to a trained GAN (train --init-from): zero- or near-zero-initialised, so
# that the weights loaded around them keep their function.
WARM_START_MODULES = ("char_film.", "mbstd.", "char_noise_proj.")


def load_new_modules(model: torch.nn.Module, state: dict, name: str, path) -> bool:
    """Load `state` into `model`, leaving WARM_START_MODULES that `state` lacks as they are. True if
    some were missing (the model's parameters are then not those of the checkpoint's optimizer)."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of another shape: another architecture
        raise CheckpointError(f"{path}: {name} weights do not fit this config ({str(e).splitlines()[-1].strip()})") \
            from None
    other = [k for k in missing if not k.startswith(WARM_START_MODULES)]
    if unexpected or other:
        raise CheckpointError(f"{path}: {name} weights do not fit this config (missing {other[:3]}, unexpected "
                              f"{unexpected[:3]}); --init-from only adds {', '.join(WARM_START_MODULES)}")
    return bool(missing)


def pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    return F.pad(x, (0, width - x.shape[-1]), value=-1.0) if x.shape[-1] < width else x


def writer_loss(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy and accuracy over the words with a known writer (target >= 0); both 0, not
    NaN, for a batch without any."""
    known = target >= 0
    n = known.sum().clamp(min=1)
    loss = F.cross_entropy(logits, target, ignore_index=-100, reduction="sum") / n
    acc = (logits.argmax(1)[known] == target[known]).sum().float().detach() / n
    return loss, acc


def stretch_for_w(x: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """Words in tanh space with each one's ink stretched (train.w_input = "stretched")."""
    return stretch_ink_batch((x + 1) / 2, widths, W_INK_QUANTILE) * 2 - 1


def masked_l1(a: torch.Tensor, b: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference over each word's valid columns."""
    W = max(a.shape[-1], b.shape[-1])
    a, b = pad_to(a, W), pad_to(b, W)
    keep = column_keep(W, widths).to(a.dtype)[:, None, None, :]
    return ((a - b).abs() * keep).sum() / (keep.sum() * a.shape[2])


# train.cx_on -> the chunk of G's words (in g_step) that the contextual loss compares with x.
CX_ON = {"reconstruction": 0, "new_text": 1}
W_INPUTS = ("raw", "stretched")  # train.w_input: what the writer classifier reads
W_INK_QUANTILE = 0.99  # w_input = "stretched": this quantile of a word's ink becomes full ink


def broadcast_from_rank0(module: torch.nn.Module) -> None:
    """Give every rank rank 0's weights and buffers (what DDP does for the modules it wraps)."""
    for t_ in module.state_dict().values():
        torch.distributed.broadcast(t_, 0)


class GanTrainer:
    def __init__(self, config: dict, recognizer_config: dict, dataset, alphabet: Alphabet, out_dir: str | Path,
                 dist: DistInfo, lexicon: list[str] | None = None, progress: bool = True, val_dataset=None):
        self.config, self.dist, self.progress = config, dist, progress
        self.out = Path(out_dir)
        t = config["train"]
        self.dataset, self.alphabet, self.val_dataset = dataset, alphabet, val_dataset
        seed_everything(t["seed"] + dist.rank)
        dev = dist.device
        self.G = build_generator(config, len(alphabet)).to(dev)
        g = config["discriminator"]["mbstd_group"]
        if g and (t["batch_size"] % g or (t["batch_size"] // 2) % g):
            # D sees [real; fake] and fake is [E styles; prior styles]: no group may straddle two.
            raise ValueError(f"discriminator.mbstd_group {g} must divide half the batch "
                             f"(train.batch_size {t['batch_size']})")
        if t["div_local"] and not (t["w_div"] > 0 and self.G.char_noise):
            raise ValueError("train.div_local needs letter noise to vary (generator.char_noise > 0) and the "
                             "mode-seeking term on (train.w_div > 0)")
        if t["div_cap"] < 0:
            raise ValueError(f"train.div_cap = {t['div_cap']}: a distance, 0 (no cap) or more")
        if t["div_space"] not in ("pixel", "writer"):
            raise ValueError(f"train.div_space {t['div_space']!r}: expected 'pixel' or 'writer'")
        if t["div_space"] == "writer" and not (t["w_div"] > 0 and t["w_wid"] > 0):
            raise ValueError("train.div_space = 'writer' measures the mode-seeking distance in the writer "
                             "classifier's features: it needs train.w_div > 0 and W (train.w_wid > 0)")
        self.D = build_discriminator(config).to(dev)
        self.E: StyleEncoder | None = build_style_encoder(config).to(dev) if config["style"]["enabled"] else None
        if dist.distributed and self.E is not None:
            # E is not wrapped in DDP (it runs twice per step), so rank 0's initial weights are
            # broadcast by hand, as DDP does for G, D and R; its gradients are averaged in g_step.
            broadcast_from_rank0(self.E)
        self.R = CRNN(recognizer_config, len(alphabet)).to(dev)  # the project's recognizer, not a second one
        self.writer_ids = self._writer_ids(config, dataset)
        self.W: WriterClassifier | None = None
        self.w_frozen = False
        if self.writer_ids:
            self.W = WriterClassifier(len(self.writer_ids), base=config["style"]["base"]).to(dev)
            self.writer_index = {w: i for i, w in enumerate(self.writer_ids)}
            if t["w_cx"] > 0 and not 1 <= t["cx_stage"] <= self.W.stages:  # at start, not at the first G step
                raise ValueError(f"train.cx_stage = {t['cx_stage']}: the writer classifier's feature map has "
                                 f"stages 1 to {self.W.stages}")
            if t["cx_on"] not in CX_ON:
                raise ValueError(f"train.cx_on = {t['cx_on']!r}: one of {', '.join(CX_ON)}")
            if t["w_input"] not in W_INPUTS:
                raise ValueError(f"train.w_input = {t['w_input']!r}: one of {', '.join(W_INPUTS)}")
            self.opt_w = torch.optim.Adam(self.W.parameters(), lr=t["lr_w"], betas=(0.5, 0.999))
            # lr_w = 0 holds W fixed: no weight gradients at all (G's losses still reach G through
            # W's activations), and W's own step only reads the batch for the log: its backward
            # pass and Adam step at learning rate 0 were work that changed nothing.
            self.w_frozen = t["lr_w"] == 0
            self.W.requires_grad_(not self.w_frozen)
        self.recognizer_config = recognizer_config
        self.ema = EMA(self.G, t["ema_decay"])
        self.ema_e = EMA(self.E, t["ema_decay"]) if self.E is not None else None
        self.g_params = list(self.G.parameters()) + (list(self.E.parameters()) if self.E is not None else [])
        self.opt_g = torch.optim.Adam(self.g_param_groups(t), lr=t["lr_g"], betas=tuple(t["betas_g"]))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=t["lr_d"], betas=tuple(t["betas_d"]))
        self.opt_r = torch.optim.AdamW(self.R.parameters(), lr=config["recognizer"]["lr"],
                                       weight_decay=recognizer_config["train"]["weight_decay"])
        if t["lookahead"]:
            self.opt_g = Lookahead(self.opt_g, t["lookahead_k"], t["lookahead_alpha"])
            self.opt_d = Lookahead(self.opt_d, t["lookahead_k"], t["lookahead_alpha"])
        self.balancer = GradientBalancer({"adv": t["w_adv"], "ctc": t["alpha"], "rec": t["w_rec"],
                                          "info": t["w_info"], "div": t["w_div"], "wid": t["w_wid"],
                                          "cx": t["w_cx"]},
                                         t["balance_decay"])
        if dist.distributed:
            ids = [dev.index] if dev.type == "cuda" else None
            self.G_train, self.D_train, self.R_train = (DDP(m, device_ids=ids) for m in (self.G, self.D, self.R))
            self.W_train = (DDP(self.W, device_ids=ids) if self.W is not None and not self.w_frozen
                            else self.W)  # DDP refuses a module with nothing to train...
            if self.w_frozen:  # ...so rank 0's weights are broadcast by hand, as for E
                broadcast_from_rank0(self.W)
        else:
            self.G_train, self.D_train, self.R_train, self.W_train = self.G, self.D, self.R, self.W
        self.collate = CanonicalCollate(alphabet, config["data"]["px_per_char"])
        # By default G writes the training words at their real frequencies, so that D cannot
        # tell real from fake by the distribution of word lengths.
        self.texts = TextSampler(lexicon or list(dataset.texts), t["seed"], dist.rank, t["text_caps_share"])
        self.step, self.g_steps, self.epoch, self.batch_in_epoch = 0, 0, 0, 0
        self.natural_px_per_char, self.writer_px_per_char = px_per_char(dataset)  # one pass over the words
        # A fixed grid of words and styles, drawn every sample_every steps.
        counts = Counter(dataset.texts)
        self.sample_texts = sorted(counts, key=lambda w: (-counts[w], w))[:8]
        self._held_out = None
        self.fitted_prior = None  # set at checkpoints when style.fitted_prior

    @staticmethod
    def _writer_ids(config: dict, dataset) -> list[str]:
        """The training writers W tells apart (sorted ids), or [] without the writer-identity loss."""
        if config["train"]["w_wid"] <= 0:
            if config["train"]["w_cx"] > 0:
                raise ValueError("train.w_cx needs the writer classifier W (train.w_wid > 0): the contextual "
                                 "loss compares words in W's feature space")
            return []
        if config["style"]["enabled"] is False:
            raise ValueError("train.w_wid needs the style encoder (style.enabled): G writes in E(x)'s style")
        ids = sorted({w for w in getattr(dataset, "writers", []) if w})
        if len(ids) < 2:
            raise ValueError(f"train.w_wid: the training words have {len(ids)} writer id(s); the writer-identity "
                             "loss needs an LMDB with writer ids (htr-build-lmdb from a TSV with a writer "
                             "column, then recognizer.segment) and at least two writers")
        return ids

    def writer_targets(self, real: dict) -> torch.Tensor:
        """Class indices of the batch's writers; -100 (ignored by the cross-entropy) for words without one."""
        return torch.tensor([self.writer_index.get(w, -100) for w in real["writers"]], device=self.dist.device)

    @property
    def r_frozen_now(self) -> bool:
        return self.config["recognizer"]["frozen"] and self.step >= self.config["recognizer"]["pretrain_steps"]

    # -- checkpoints ---------------------------------------------------------
    def checkpoint(self) -> dict:
        opt_state = lambda o: o.state_dict()  # noqa: E731 (Lookahead and Adam alike)
        models = {"generator": self.G.state_dict(), "generator_ema": self.ema.model.state_dict(),
                  "discriminator": self.D.state_dict(), "recognizer": self.R.state_dict()}
        if self.E is not None:
            models.update(style_encoder=self.E.state_dict(), style_encoder_ema=self.ema_e.model.state_dict())
        optimizers = {"generator": opt_state(self.opt_g), "discriminator": opt_state(self.opt_d),
                      "recognizer": opt_state(self.opt_r)}
        if self.W is not None:
            models["writer_classifier"] = self.W.state_dict()
            optimizers["writer_classifier"] = self.opt_w.state_dict()
        return make_checkpoint(
            "gan", {**self.config, "recognizer_model": self.recognizer_config}, self.alphabet, self.step,
            self.epoch, batch_in_epoch=self.batch_in_epoch, models=models,
            optimizers=optimizers, rng=all_gather_objects(rng_state()),
            extra={"natural_px_per_char": self.natural_px_per_char, "writer_px_per_char": self.writer_px_per_char,
                   "data_credit": data_credit(getattr(self.dataset, "meta", {})) or "",
                   "train_words": len(self.dataset), "g_steps": self.g_steps, "balancer": self.balancer.state_dict(),
                   "style_prior": self.refit_prior(), "writer_ids": self.writer_ids})

    def refit_prior(self) -> dict | None:
        prior = self.style_prior()
        if prior is not None and self.config["style"]["fitted_prior"] and self.g_steps > 0:
            self.fitted_prior = prior
        return prior

    @torch.no_grad()
    def style_prior(self, n: int = 512) -> dict | None:
        """The EMA style encoder's codes of n training words (evenly spaced), fitted by a Gaussian:
        WordGenerator samples its default styles there (G learned on those codes, not on N(0, I))."""
        if self.E is None:
            return None
        idx = list(range(0, len(self.dataset), max(1, len(self.dataset) // n)))[:n]
        codes = []
        for start in range(0, len(idx), 64):
            batch = self.collate([self.dataset[i] for i in idx[start:start + 64]])
            mu, _ = self.ema_e.model(batch["images"].to(self.dist.device) * 2 - 1, batch["widths"].to(self.dist.device))
            codes.append(mu.float().cpu())
        return fit_style_prior(torch.cat(codes))

    def save(self, *names: str) -> None:
        """Write the checkpoint (built once) to each of `names` (default last.pt) in OUT."""
        ckpt = self.checkpoint()  # collective (gathers RNG states): every rank takes part
        if self.dist.is_main:
            for name in names or ("last.pt",):
                save_checkpoint(ckpt, self.out / name)

    def g_param_groups(self, t: dict) -> list[dict]:
        """G's and E's parameters; generator.char_style's FiLM and generator.char_noise's pathway
        each in a group of its own when train.lr_char_style / lr_char_noise is set (a single group
        otherwise, as in earlier checkpoints)."""
        groups, own = [], set()
        for module, lr in ((self.G.char_film, t["lr_char_style"]), (self.G.char_noise_proj, t["lr_char_noise"])):
            if module is not None and lr > 0:
                groups.append({"params": list(module.parameters()), "lr": lr})
                own |= {id(p) for p in module.parameters()}
        return [{"params": [p for p in self.g_params if id(p) not in own]}] + groups

    def resume(self, path: str | Path, warm: bool = False) -> None:
        """Continue the run of checkpoint `path` exactly. warm: start from its weights under a config
        that adds zero-initialised modules (WARM_START_MODULES, e.g. generator.char_style), which keep
        their initial weights; an optimizer whose parameters changed starts afresh."""
        ckpt = load_checkpoint(path, map_location=self.dist.device, kind="gan")
        check_alphabet(ckpt["alphabet"], self.alphabet)
        fresh = set()
        pairs = [("generator", self.G), ("generator_ema", self.ema.model), ("discriminator", self.D),
                 ("recognizer", self.R)]
        if self.E is not None:
            pairs += [("style_encoder", self.E), ("style_encoder_ema", self.ema_e.model)]
        for name, model in pairs:
            if name not in ckpt["models"]:
                raise CheckpointError(f"{path}: no {name} weights (a checkpoint of another GAN config?)")
            if not warm:
                model.load_state_dict(ckpt["models"][name])
            elif load_new_modules(model, ckpt["models"][name], name, path):
                fresh.add(name)
        for name, opt in (("generator", self.opt_g), ("discriminator", self.opt_d), ("recognizer", self.opt_r)):
            if name in fresh:
                continue
            try:
                load_optimizer_state(opt, ckpt["optimizers"][name])
            except ValueError:  # other parameter groups (train.lr_char_style, lr_char_noise)
                if not warm:
                    raise CheckpointError(f"{path}: the {name} optimizer's parameter groups differ from this "
                                          "config's (train.lr_char_style or lr_char_noise?); start from it with "
                                          "--init-from") from None
        w_input = ckpt["config"]["train"].get("w_input", "raw")
        if self.W is not None and "writer_classifier" in ckpt["models"] and w_input != self.config["train"]["w_input"]:
            if self.dist.is_main:
                print(f"{path}: its writer classifier read {w_input!r} words, this config's reads "
                      f"{self.config['train']['w_input']!r} ones: W starts afresh", file=sys.stderr)
        elif self.W is not None and "writer_classifier" in ckpt["models"]:
            if ckpt["extra"].get("writer_ids") != self.writer_ids:
                raise CheckpointError(f"{path}: its writer classifier was trained on other writers than those of "
                                      "the training LMDB")
            self.W.load_state_dict(ckpt["models"]["writer_classifier"])
            load_optimizer_state(self.opt_w, ckpt["optimizers"]["writer_classifier"])
        # else: weights from a run without the writer-identity loss; W starts here (train.wid_start)
        self.step, self.epoch, self.batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        self.g_steps = ckpt["extra"].get("g_steps", self.step)
        if self.config["style"]["fitted_prior"] and self.g_steps > 0:
            self.fitted_prior = ckpt["extra"].get("style_prior")
        saved_batch = ckpt["config"]["train"].get("batch_size", self.config["train"]["batch_size"])
        self.balancer.load_state_dict(ckpt["extra"].get("balancer", {}), saved_batch / self.config["train"]["batch_size"])
        if len(ckpt["rng"]) > self.dist.rank:
            set_rng_state(ckpt["rng"][self.dist.rank])

    def load_recognizer(self, path: str | Path) -> None:
        """Start R from a trained word recognizer (same alphabet)."""
        ckpt = load_checkpoint(path, map_location=self.dist.device, kind="recognizer")
        check_alphabet(ckpt["alphabet"], self.alphabet, "recognizer checkpoint")
        self.R.load_state_dict(ckpt["models"]["recognizer"])

    # -- one iteration ---------------------------------------------------------
    def prior_z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n prior styles: N(0, I), or with style.fitted_prior the Gaussian last fitted to E's codes of
        real words (refitted at every checkpoint), where G is then trained and sampled alike."""
        return from_style_prior(torch.randn(n, self.G.z_dim, generator=generator), self._prior_tensors)

    @property
    def fitted_prior(self) -> dict | None:
        return self._fitted_prior

    @fitted_prior.setter
    def fitted_prior(self, prior: dict | None) -> None:
        self._fitted_prior = prior
        self._prior_tensors = style_prior_tensors(prior)  # built once, not per draw

    def _fake_inputs(self, n: int, key: str):
        texts = self.texts.draw(f"{self.step}:{key}", n)
        tokens, lengths, targets = encode_texts(texts, self.alphabet)
        z = self.prior_z(n)
        dev = self.dist.device
        return texts, tokens.to(dev), lengths.to(dev), targets.to(dev), z.to(dev)

    def letter_noise(self, n: int, length: int) -> torch.Tensor | None:
        """Fresh noise for the letters of n words (generator.char_noise), or None without it."""
        k = self.G.char_noise
        return torch.randn(n, length, k, device=self.dist.device) if k else None

    def _encode(self, encoder: StyleEncoder, x: torch.Tensor, widths: torch.Tensor, sample: bool = True):
        mu, logvar = encoder(x, widths)
        style = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        return style, mu, logvar

    def d_step(self, real_x, real_w, policy) -> dict[str, torch.Tensor]:
        B, px = real_x.shape[0], self.G.px_per_char
        _, tokens, lengths, _, z = self._fake_inputs(B, "d")
        with torch.no_grad():
            if self.E is not None:  # half the fakes in real writers' styles, half from the prior
                style, _, _ = self._encode(self.E, real_x, real_w)
                z = torch.cat([style[: B // 2], z[B // 2:]])
            fake = self.G(tokens, lengths, z, self.letter_noise(B, tokens.shape[1]))
        W = max(real_x.shape[-1], fake.shape[-1])
        both = torch.cat([pad_to(real_x, W), pad_to(fake, W)])
        widths = torch.cat([real_w, lengths * px])
        scores = self.D_train(diff_augment(both, widths, policy), widths)
        loss_real, loss_fake = F.relu(1 - scores[:B]).mean(), F.relu(1 + scores[B:]).mean()
        self.opt_d.zero_grad(set_to_none=True)
        (loss_real + loss_fake).backward()
        self.opt_d.step()
        return {"loss/d_real": loss_real, "loss/d_fake": loss_fake}

    def w_view(self, x: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        """Words (tanh space) as the writer classifier reads them (train.w_input)."""
        return x if self.config["train"]["w_input"] == "raw" else stretch_for_w(x, widths)

    def writer_distance(self, a: torch.Tensor, b: torch.Tensor, widths: torch.Tensor,
                        stage: int | None = None) -> torch.Tensor:
        """(B,): how far apart W's feature maps (after `stage` down-sampling stages, default
        train.div_stage) put word pairs a[i], b[i] of the same widths, read as W reads. One pass
        over both: W has no batch statistics."""
        both = torch.cat([widths, widths])
        maps, valid = self.W.feature_map(self.w_view(torch.cat([a, b]), both), both,
                                         self.config["train"]["div_stage"] if stage is None else stage)
        return map_l1(maps[:len(a)], maps[len(a):], valid[:len(a)])

    def w_step(self, real_x, real_w, real) -> dict[str, torch.Tensor]:
        """W: cross-entropy on the real batch's writers (real words only, like R)."""
        target = self.writer_targets(real)
        self.W_train.train()
        if self.w_frozen:
            with torch.no_grad():
                return dict(zip(("loss/w_real_ce", "acc/w_real"),
                                writer_loss(self.W_train(self.w_view(real_x, real_w), real_w), target)))
        logits = self.W_train(self.w_view(real_x, real_w), real_w)
        loss, acc = writer_loss(logits, target)  # every rank steps, even on a batch without writer ids (DDP)
        self.opt_w.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_w.step()
        return {"loss/w_real_ce": loss, "acc/w_real": acc}

    def r_step(self, real_x, real, dev) -> dict[str, torch.Tensor]:
        self.R_train.train()
        out = self.R_train((real_x + 1) / 2, real["widths"].to(dev))
        loss_r, _, _ = ctc_losses(out, real["targets"].to(dev), real["target_lengths"].to(dev),
                                  self.recognizer_config["train"]["shortcut_weight"])
        self.opt_r.zero_grad(set_to_none=True)
        loss_r.backward()
        self.opt_r.step()
        return {"loss/r_real_ctc": loss_r}

    def g_step(self, real_x, real_w, real, policy) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        t, dev, px = self.config["train"], self.dist.device, self.G.px_per_char
        B = real_x.shape[0]
        _, tok_t, len_t, tgt_t, z = self._fake_inputs(B, "g")
        # Chunks of B words each: [real texts in E(x)], [random texts in E(x)], random texts in
        # z, [the same texts in a second z (mode seeking: different z, different images), or with
        # train.div_local in the same z with other letter noise].
        chunks = [(tok_t, len_t, tgt_t, z)]
        if t["w_div"] > 0:
            chunks.append((tok_t, len_t, tgt_t, z if t["div_local"] else self.prior_z(B).to(dev)))
        losses: dict[str, torch.Tensor] = {}
        if self.E is not None:
            tok_x, len_x, tgt_x = (v.to(dev) for v in encode_texts(real["texts"], self.alphabet))
            style, mu, logvar = self._encode(self.E, real_x, real_w)
            chunks = [(tok_x, len_x, tgt_x, style), (tok_t, len_t, tgt_t, style)] + chunks
        L = max(c[0].shape[1] for c in chunks)
        tokens = torch.cat([F.pad(c[0], (0, L - c[0].shape[1])) for c in chunks])
        lengths, targets, styles = (torch.cat([c[i] for c in chunks]) for i in (1, 2, 3))
        noise = self.letter_noise(len(tokens), L)
        if noise is not None and self.E is not None:
            noise[:B] = 0  # the reconstruction: x's own letters, not a noisy variant of them
        fake = self.G_train(tokens, lengths, styles, noise)
        widths = lengths * px
        losses["loss/g_adv"] = -self.D(diff_augment(fake, widths, policy), widths).mean()
        self.R.eval()  # R's batch statistics stay those of real handwriting
        _, losses["loss/g_ctc"], _ = ctc_losses(self.R((fake + 1) / 2, widths), targets, lengths, 0.0)
        z0 = 2 * B if self.E is not None else 0  # first prior-style chunk
        if t["w_div"] > 0:
            # Distance between the two prior-style chunks (same texts), to be increased; with
            # train.div_cap, each pair's up to the cap.
            a_, b_, w_ = fake[z0:z0 + B], fake[z0 + B:z0 + 2 * B], widths[z0:z0 + B]
            if t["div_space"] == "writer" or t["div_cap"] > 0:  # one distance per pair
                dist = self.writer_distance(a_, b_, w_) if t["div_space"] == "writer" else word_l1(a_, b_, w_)
                losses["loss/g_div"] = -(dist.clamp(max=t["div_cap"]) if t["div_cap"] > 0 else dist).mean()
                losses["dist/g_div"] = dist.mean().detach()  # logged: the distance itself, past the cap too
            else:
                losses["loss/g_div"] = -masked_l1(a_, b_, w_)
        if self.E is not None:
            losses["loss/g_rec"] = masked_l1(fake[:B], real_x, real_w)
            mu_fake, _ = self.E(fake[z0:], widths[z0:])
            losses["loss/g_info"] = (mu_fake - styles[z0:]).abs().mean()
            losses["loss/e_kl"] = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).mean()
        if self.W is not None and self.step >= t["wid_start"]:
            # New text in E(x) (chunk b) must look like x's writer's hand (W's weights get no gradient:
            # the balancer differentiates with respect to the image only).
            new_w = widths[B:2 * B]
            losses["loss/g_wid"], losses["acc/g_wid"] = writer_loss(self.W(self.w_view(fake[B:2 * B], new_w), new_w),
                                                                    self.writer_targets(real))
            if t["w_cx"] > 0:  # x's local shapes, anywhere in one of G's words in E(x) (train.cx_on)
                stage = t["cx_stage"]
                with torch.no_grad():
                    style_map, style_valid = self.W.feature_map(self.w_view(real_x, real_w), real_w, stage)
                c = CX_ON[t["cx_on"]] * B  # the chunk compared with x: its reconstruction or a new text
                fake_map, fake_valid = self.W.feature_map(self.w_view(fake[c:c + B], widths[c:c + B]),
                                                          widths[c:c + B], stage)
                losses["loss/g_cx"] = contextual_loss(fake_map, fake_valid, style_map, style_valid,
                                                      t["cx_bandwidth"])
        check_finite(losses, self.step + 1)  # before G's update: a NaN never reaches its weights
        self.opt_g.zero_grad(set_to_none=True)
        if self.E is not None:
            # E's own terms: the KL, and reading z back from G's prior-style words.
            own = self.config["style"]["kl"] * losses["loss/e_kl"] + losses["loss/g_info"]
            torch.autograd.backward(own, inputs=list(self.E.parameters()), retain_graph=True)
        stats = self.balancer.backward(fake, {k[len("loss/g_"):]: v for k, v in losses.items()
                                              if k.startswith("loss/g_")})
        if self.dist.distributed and self.E is not None:  # E is used twice per step: reduced by hand
            for p in self.E.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= self.dist.world_size
        if t["grad_clip_g"]:
            stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.g_params, t["grad_clip_g"]))
        self.opt_g.step()
        self.ema.update(self.G, self.g_steps)  # g_steps: G steps before this one (restored on resume)
        if self.ema_e is not None:
            self.ema_e.update(self.E, self.g_steps)
        self.g_steps += 1
        return losses, stats

    def train_step(self, real: dict) -> dict[str, float]:
        t, dev = self.config["train"], self.dist.device
        policy = t["diffaugment"]
        real_x = real["images"].to(dev) * 2 - 1  # ink space -> G's tanh space (background -1)
        real_w = real["widths"].to(dev)
        losses: dict[str, torch.Tensor] = {}
        if self.step < self.config["recognizer"]["pretrain_steps"]:
            losses.update(self.r_step(real_x, real, dev))  # R alone, before the game
            return {k: float(v.detach()) for k, v in losses.items()}
        losses.update(self.d_step(real_x, real_w, policy))
        if self.W is not None:
            losses.update(self.w_step(real_x, real_w, real))
        if not self.r_frozen_now:
            losses.update(self.r_step(real_x, real, dev))
        stats: dict[str, float] = {}
        if (self.step + 1) % t["g_every"] == 0:
            g_losses, stats = self.g_step(real_x, real_w, real, policy)
            losses.update(g_losses)
        check_finite(losses, self.step + 1)
        return {**{k: float(v.detach()) for k, v in losses.items()}, **{f"balance/{k}": v for k, v in stats.items()}}

    # -- health ----------------------------------------------------------------
    def held_out(self) -> dict | None:
        """A fixed batch of held-out real words (the validation LMDB), collated once."""
        if self._held_out is None and self.val_dataset is not None and len(self.val_dataset):
            n = min(self.config["train"]["eval_words"], len(self.val_dataset))
            idx = range(0, len(self.val_dataset), max(1, len(self.val_dataset) // n))
            self._held_out = self.collate([self.val_dataset[i] for i in list(idx)[:n]])
        return self._held_out

    @torch.no_grad()
    def health(self) -> dict[str, float]:
        """D's held-out AUC and margin; the live and EMA G's R-CER, peak ink and z-diversity."""
        real = self.held_out()
        if real is None:
            return {}
        dev, px = self.dist.device, self.G.px_per_char
        real_x, real_w = real["images"].to(dev) * 2 - 1, real["widths"].to(dev)
        self.R.eval()
        out = {"health/real_r_cer": recognizer_cer(self.R, (real_x + 1) / 2, real_w, real["texts"], self.alphabet),
               "health/real_peak_ink": float(((real_x + 1) / 2).amax((1, 2, 3)).mean())}
        if self.step <= self.config["recognizer"]["pretrain_steps"]:
            return out  # R alone so far: G and D are untouched
        tokens, lengths, _ = (v.to(dev) for v in encode_texts(real["texts"], self.alphabet))
        gen = torch.Generator().manual_seed(4321)
        z, z2 = (self.prior_z(len(real["texts"]), gen).to(dev) for _ in range(2))
        for name, G in (("live", self.G), ("ema", self.ema.model)):
            out.update({f"health/{name}_{k}": v for k, v in
                        generator_health(G, self.R, self.alphabet, tokens, lengths, real["texts"], z, z2).items()})
        if self.E is not None:  # the EMA G in real writers' styles (codes of the held-out words themselves
            # rolled by one, so each word is written in another writer's hand) and the fitted prior's
            codes, _ = self.ema_e.model(real_x, real_w)
            out.update({f"health/ema_styled_{k}": v for k, v in generator_health(
                self.ema.model, self.R, self.alphabet, tokens, lengths, real["texts"], codes.roll(1, 0),
                codes.roll(2, 0)).items()})
        was = self.G.training
        self.G.eval()
        fake = self.G(tokens, lengths, z)
        self.G.train(was)
        out.update({f"health/d_{k}": v for k, v in
                    discriminator_health(self.D, real_x, real_w, fake, lengths * px).items()})
        return out

    def healthy(self, h: dict[str, float]) -> bool:
        """Whether the live and the EMA G's R-CER in health `h` stay below train.breakdown_cer and
        at most train.breakdown_vs_real times the real words' R-CER (when both are given)."""
        t = self.config["train"]
        limit = t["breakdown_cer"]
        if t["breakdown_vs_real"] > 0 and "health/real_r_cer" in h:
            limit = min(limit, t["breakdown_vs_real"] * h["health/real_r_cer"] + 1e-9)  # equal is healthy
        return all(h.get(f"health/{n}_r_cer", 1.0) < limit for n in ("live", "ema"))

    # -- the loop --------------------------------------------------------------
    def sample_grid(self) -> np.ndarray:
        """uint8: rows = styles, columns = the fixed sample words (EMA generator)."""
        from .word_generator import WordGenerator
        gen = WordGenerator(self.ema.model, self.alphabet, self.config, device=self.dist.device)
        rows = []
        for z in self.prior_z(4, torch.Generator().manual_seed(1234)):
            imgs = [to_uint8(im) for im in gen.generate(self.sample_texts, z=z, natural_width=False)]
            row = np.full((gen.height, sum(i.shape[1] + 8 for i in imgs)), 255, np.uint8)
            x = 0
            for im in imgs:
                row[:, x:x + im.shape[1]] = im
                x += im.shape[1] + 8
            rows.append(row)
        self.ema.model.eval()
        return np.concatenate([np.pad(r, ((2, 2), (0, 0)), constant_values=255) for r in rows])

    def fit(self, max_steps: int | None = None, time_limit: float | None = None) -> dict[str, float]:
        """Train to max_steps (default train.max_steps); a signal, or time_limit seconds passing, stops
        the loop after the current iteration with last.pt saved (self.interrupted)."""
        t = self.config["train"]
        max_steps = max_steps or t["max_steps"]
        logger = MetricsLogger(self.out, enabled=self.dist.is_main, resume_step=self.step or None)
        bar = tqdm(total=max_steps, initial=self.step, unit="it", desc="GAN", dynamic_ncols=True,
                   disable=not (self.progress and self.dist.is_main))
        last: dict[str, float] = {}
        if self.config["recognizer"]["frozen"] and self.step >= self.config["recognizer"]["pretrain_steps"]:
            self.R.eval()
        self.interrupted = False  # set by SIGINT/SIGTERM or the time limit: last.pt is saved after the step
        self.stop_reason = ""
        with StopRequest(time_limit) as stop_request:
            try:
                while self.step < max_steps and not self.interrupted:
                    batches = epoch_batches(len(self.dataset), t["batch_size"], t["seed"], self.epoch,
                                            self.dist.rank, self.dist.world_size)
                    if not batches:
                        raise ValueError(f"{len(self.dataset)} training words are fewer than one batch "
                                         f"of {t['batch_size']} per process")
                    # Its own generator: a DataLoader otherwise draws its worker seed from the global
                    # RNG, and a resumed run (which builds one more loader) would drift from the original.
                    loader = DataLoader(self.dataset, batch_sampler=batches[self.batch_in_epoch:],
                                        collate_fn=self.collate, num_workers=self.config["data"]["num_workers"],
                                        worker_init_fn=ignore_sigint,
                                        generator=torch.Generator().manual_seed(t["seed"] * 7919 + self.epoch))
                    for real in loader:
                        last.update(self.train_step(real))
                        if self.r_frozen_now:
                            last.pop("loss/r_real_ctc", None)
                        self.step += 1
                        self.batch_in_epoch += 1
                        bar.update(1)
                        if self.step % t["log_every"] == 0:
                            names = sorted(last)
                            sums = all_reduce_sum([last[k] for k in names])
                            last = {k: v / self.dist.world_size for k, v in zip(names, sums)}
                            logger.scalars({**last, "train/g_steps": self.g_steps}, self.step)
                            bar.set_postfix({k.split("/")[-1]: f"{last[k]:.3g}" for k in
                                             ("loss/g_adv", "loss/g_ctc", "loss/g_rec", "loss/r_real_ctc") if k in last},
                                            refresh=False)
                        names = []
                        if t["eval_every"] and self.step % t["eval_every"] == 0 and self.dist.is_main:
                            h = self.health()
                            if h:
                                logger.scalars(h, self.step)
                                bar.write(f"step {self.step} ({self.g_steps} G steps): " + ", ".join(
                                    f"{k.split('/')[-1]} {v:.3g}" for k, v in h.items()))
                                if self.step > self.config["recognizer"]["pretrain_steps"]:
                                    if self.healthy(h):
                                        names.append("healthy.pt")
                                    else:
                                        bar.write(f"step {self.step}: not healthy (live or EMA G's R-CER above "
                                                  "train.breakdown_cer or breakdown_vs_real x real words'); "
                                                  "healthy.pt keeps the last healthy checkpoint")
                        if self.step % t["sample_every"] == 0 and self.dist.is_main:
                            grid = self.sample_grid()
                            logger.image("samples", torch.from_numpy(1 - grid / 255.0)[None].float(), self.step)
                            (self.out / "samples").mkdir(parents=True, exist_ok=True)
                            (self.out / "samples" / f"step{self.step:07d}.png").write_bytes(encode_png(grid))
                        if t["keep_every"] and self.step % t["keep_every"] == 0:
                            names.append(f"step{self.step:07d}.pt")
                        self.interrupted = stop_request.agreed()  # a signal or the time limit: checkpoint now, then stop
                        if self.interrupted:
                            self.stop_reason = "signal" if stop_request.requested else "time limit"
                        if self.step % t["checkpoint_every"] == 0 or self.step == max_steps or self.interrupted:
                            names.append("last.pt")
                            logger.flush()
                        if self.dist.distributed:  # every rank must take part in the checkpoint's gather
                            names = broadcast_object(names)
                        if names:
                            self.save(*names)
                        if self.step >= max_steps or self.interrupted:
                            break
                    else:
                        self.epoch += 1
                        self.batch_in_epoch = 0
            finally:
                bar.close()
                logger.close()
        return last
