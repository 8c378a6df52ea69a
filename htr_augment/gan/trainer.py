"""The GAN training loop: D (hinge), R (CTC on real words only) and G (balanced adversarial + CTC).

One step:
  1. D: hinge loss on DiffAugment-ed real and generated words (G not updated).
  2. R: CTC on the real batch; R never sees a generated image in its own update.
  3. G: the adversarial loss through D and the CTC loss through R (in eval mode, so its
     batch-norm statistics stay those of real data) are differentiated with respect to
     the generated image only; the CTC gradient is rescaled to alpha * std(adv)/std(ctc)
     (balance.py) and the sum is back-propagated into G alone.
  4. The EMA copy of G follows.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from recognizer.losses import ctc_losses
from recognizer.model import CRNN

from ..alphabet import Alphabet
from ..data.credit import data_credit
from ..images import encode_png, to_uint8
from ..training import (DistInfo, MetricsLogger, all_reduce_sum, check_alphabet, load_checkpoint, make_checkpoint,
                        rng_state, save_checkpoint, seed_everything, set_rng_state)
from ..training.ema import EMA
from ..training.lookahead import Lookahead
from .balance import backward_balanced
from .data import CanonicalCollate, TextSampler, encode_texts, natural_px_per_char
from .diffaugment import diff_augment
from .models import Discriminator
from .word_generator import build_generator

class NonFiniteLoss(RuntimeError):
    pass


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int, world: int) -> list[list[int]]:
    """This rank's batches of one epoch: a seeded permutation, equal shares, full batches only."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    mine = perm[: n - n % world][rank::world]
    return [mine[i:i + batch_size] for i in range(0, len(mine) - batch_size + 1, batch_size)]


class GanTrainer:
    def __init__(self, config: dict, recognizer_config: dict, dataset, alphabet: Alphabet, out_dir: str | Path,
                 dist: DistInfo, lexicon: list[str] | None = None, progress: bool = True):
        self.config, self.dist, self.progress = config, dist, progress
        self.out = Path(out_dir)
        t = config["train"]
        self.dataset, self.alphabet = dataset, alphabet
        seed_everything(t["seed"] + dist.rank)
        dev = dist.device
        self.G = build_generator(config, len(alphabet)).to(dev)
        self.D = Discriminator(base=config["discriminator"]["base"],
                               channel_mult=tuple(config["discriminator"]["channel_mult"])).to(dev)
        self.R = CRNN(recognizer_config, len(alphabet)).to(dev)  # the project's recognizer, not a second one
        self.recognizer_config = recognizer_config
        self.ema = EMA(self.G, t["ema_decay"])
        betas = tuple(t["betas"])
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=t["lr_g"], betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=t["lr_d"], betas=betas)
        self.opt_r = torch.optim.AdamW(self.R.parameters(), lr=config["recognizer"]["lr"])
        if t["lookahead"]:
            self.opt_g = Lookahead(self.opt_g, t["lookahead_k"], t["lookahead_alpha"])
            self.opt_d = Lookahead(self.opt_d, t["lookahead_k"], t["lookahead_alpha"])
        if dist.distributed:
            ids = [dev.index] if dev.type == "cuda" else None
            self.G_train, self.D_train, self.R_train = (DDP(m, device_ids=ids) for m in (self.G, self.D, self.R))
        else:
            self.G_train, self.D_train, self.R_train = self.G, self.D, self.R
        self.collate = CanonicalCollate(alphabet, config["data"]["px_per_char"])
        # By default G writes the training words at their real frequencies, so that D cannot
        # tell real from fake by the distribution of word lengths.
        self.texts = TextSampler(lexicon or list(dataset.texts), t["seed"], dist.rank)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.natural_px_per_char = natural_px_per_char(dataset)
        # A fixed grid of words and styles, drawn every sample_every steps.
        counts = Counter(dataset.texts)
        self.sample_texts = sorted(counts, key=lambda w: (-counts[w], w))[:8]
        self.sample_z = torch.randn(4, self.G.z_dim, generator=torch.Generator().manual_seed(1234))

    # -- checkpoints ---------------------------------------------------------
    def checkpoint(self) -> dict:
        opt_state = lambda o: o.state_dict()  # noqa: E731 (Lookahead and Adam alike)
        from ..training import all_gather_objects
        return make_checkpoint(
            "gan", {**self.config, "recognizer_model": self.recognizer_config}, self.alphabet, self.step,
            self.epoch, batch_in_epoch=self.batch_in_epoch,
            models={"generator": self.G.state_dict(), "generator_ema": self.ema.model.state_dict(),
                    "discriminator": self.D.state_dict(), "recognizer": self.R.state_dict()},
            optimizers={"generator": opt_state(self.opt_g), "discriminator": opt_state(self.opt_d),
                        "recognizer": opt_state(self.opt_r)},
            rng=all_gather_objects(rng_state()),
            extra={"natural_px_per_char": self.natural_px_per_char, "data_credit": data_credit(getattr(self.dataset, "meta", {})) or "",
                   "train_words": len(self.dataset)})

    def save(self, *names: str) -> None:
        """Write the checkpoint (built once) to each of `names` (default last.pt) in OUT."""
        ckpt = self.checkpoint()  # collective (gathers RNG states): every rank takes part
        if self.dist.is_main:
            for name in names or ("last.pt",):
                save_checkpoint(ckpt, self.out / name)

    def resume(self, path: str | Path) -> None:
        ckpt = load_checkpoint(path, map_location=self.dist.device, kind="gan")
        check_alphabet(ckpt["alphabet"], self.alphabet)
        for name, model in (("generator", self.G), ("generator_ema", self.ema.model),
                            ("discriminator", self.D), ("recognizer", self.R)):
            model.load_state_dict(ckpt["models"][name])
        for name, opt in (("generator", self.opt_g), ("discriminator", self.opt_d), ("recognizer", self.opt_r)):
            opt.load_state_dict(ckpt["optimizers"][name])
        self.step, self.epoch, self.batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        if len(ckpt["rng"]) > self.dist.rank:
            set_rng_state(ckpt["rng"][self.dist.rank])

    def load_recognizer(self, path: str | Path) -> None:
        """Start R from a trained word recognizer (same alphabet)."""
        ckpt = load_checkpoint(path, map_location=self.dist.device, kind="recognizer")
        check_alphabet(ckpt["alphabet"], self.alphabet, "recognizer checkpoint")
        self.R.load_state_dict(ckpt["models"]["recognizer"])

    # -- one step --------------------------------------------------------------
    def _fake_inputs(self, n: int):
        texts = self.texts.draw(self.step, n)
        tokens, lengths, targets = encode_texts(texts, self.alphabet)
        z = torch.randn(n, self.G.z_dim)
        dev = self.dist.device
        return texts, tokens.to(dev), lengths.to(dev), targets.to(dev), z.to(dev)

    def train_step(self, real: dict) -> dict[str, float]:
        t, dev = self.config["train"], self.dist.device
        policy = t["diffaugment"]
        real_x = real["images"].to(dev) * 2 - 1  # ink space -> G's tanh space (background -1)
        real_w = real["widths"].to(dev)
        B = real_x.shape[0]
        px = self.G.px_per_char

        # 1. Discriminator (one forward over real and fake together: DDP-friendly).
        for _ in range(t["d_steps"]):
            _, tokens, lengths, _, z = self._fake_inputs(B)
            with torch.no_grad():
                fake = self.G(tokens, lengths, z)
            W = max(real_x.shape[-1], fake.shape[-1])
            both = torch.cat([F.pad(real_x, (0, W - real_x.shape[-1]), value=-1.0),
                              F.pad(fake, (0, W - fake.shape[-1]), value=-1.0)])
            widths = torch.cat([real_w, lengths * px])
            scores = self.D_train(diff_augment(both, widths, policy), widths)
            loss_d_real = F.relu(1 - scores[:B]).mean()
            loss_d_fake = F.relu(1 + scores[B:]).mean()
            self.opt_d.zero_grad(set_to_none=True)
            (loss_d_real + loss_d_fake).backward()
            self.opt_d.step()

        # 2. Recognizer, on real words only.
        self.R_train.train()
        out = self.R_train((real_x + 1) / 2, real_w)
        loss_r, _, _ = ctc_losses(out, real["targets"].to(dev), real["target_lengths"].to(dev),
                                  self.recognizer_config["train"]["shortcut_weight"])
        self.opt_r.zero_grad(set_to_none=True)
        loss_r.backward()
        self.opt_r.step()

        # 3. Generator: balanced adversarial + CTC gradients of its image.
        _, tokens, lengths, targets, z = self._fake_inputs(B)
        fake = self.G_train(tokens, lengths, z)
        widths = lengths * px
        loss_adv = -self.D(diff_augment(fake, widths, policy), widths).mean()
        self.R.eval()  # R's batch statistics stay those of real handwriting
        _, loss_ctc, _ = ctc_losses(self.R((fake + 1) / 2, widths), targets, lengths, 0.0)
        self.R.train()
        losses = {"loss/d_real": loss_d_real, "loss/d_fake": loss_d_fake, "loss/r_real_ctc": loss_r,
                  "loss/g_adv": loss_adv, "loss/g_ctc": loss_ctc}
        bad = [k for k, v in losses.items() if not torch.isfinite(v)]
        if bad:
            raise NonFiniteLoss(f"non-finite {', '.join(bad)} at step {self.step + 1} "
                                f"({', '.join(f'{k}={float(v):.4g}' for k, v in losses.items())})")
        self.opt_g.zero_grad(set_to_none=True)
        stats = backward_balanced(fake, loss_adv, loss_ctc, t["alpha"])
        self.opt_g.step()
        self.ema.update(self.G, self.step)  # self.step: steps before this one (restored on resume)
        return {**{k: float(v.detach()) for k, v in losses.items()}, **{f"balance/{k}": v for k, v in stats.items()}}

    # -- the loop --------------------------------------------------------------
    def sample_grid(self) -> np.ndarray:
        """uint8: rows = styles, columns = the fixed sample words (EMA generator)."""
        from .word_generator import WordGenerator
        gen = WordGenerator(self.ema.model, self.alphabet, self.config, device=self.dist.device)
        rows = []
        for z in self.sample_z:
            imgs = [to_uint8(im) for im in gen.generate(self.sample_texts, z=z, natural_width=False)]
            row = np.full((gen.height, sum(i.shape[1] + 8 for i in imgs)), 255, np.uint8)
            x = 0
            for im in imgs:
                row[:, x:x + im.shape[1]] = im
                x += im.shape[1] + 8
            rows.append(row)
        self.ema.model.eval()
        return np.concatenate([np.pad(r, ((2, 2), (0, 0)), constant_values=255) for r in rows])

    def fit(self, max_steps: int | None = None) -> dict[str, float]:
        t = self.config["train"]
        max_steps = max_steps or t["max_steps"]
        logger = MetricsLogger(self.out, enabled=self.dist.is_main, resume_step=self.step or None)
        bar = tqdm(total=max_steps, initial=self.step, unit="step", desc="GAN", dynamic_ncols=True,
                   disable=not (self.progress and self.dist.is_main))
        last: dict[str, float] = {}
        try:
            while self.step < max_steps:
                batches = epoch_batches(len(self.dataset), t["batch_size"], t["seed"], self.epoch,
                                        self.dist.rank, self.dist.world_size)
                if not batches:
                    raise ValueError(f"{len(self.dataset)} training words are fewer than one batch "
                                     f"of {t['batch_size']} per process")
                # Its own generator: a DataLoader otherwise draws its worker seed from the global
                # RNG, and a resumed run (which builds one more loader) would drift from the original.
                loader = DataLoader(self.dataset, batch_sampler=batches[self.batch_in_epoch:],
                                    collate_fn=self.collate, num_workers=self.config["data"]["num_workers"],
                                    generator=torch.Generator().manual_seed(t["seed"] * 7919 + self.epoch))
                for real in loader:
                    last = self.train_step(real)
                    self.step += 1
                    self.batch_in_epoch += 1
                    bar.update(1)
                    if self.step % t["log_every"] == 0:
                        names = sorted(last)
                        sums = all_reduce_sum([last[k] for k in names])
                        last = {k: v / self.dist.world_size for k, v in zip(names, sums)}
                        logger.scalars(last, self.step)
                        bar.set_postfix(adv=f"{last['loss/g_adv']:.3f}", ctc=f"{last['loss/g_ctc']:.3f}",
                                        r=f"{last['loss/r_real_ctc']:.3f}", refresh=False)
                    if self.step % t["sample_every"] == 0 and self.dist.is_main:
                        grid = self.sample_grid()
                        logger.image("samples", torch.from_numpy(1 - grid / 255.0)[None].float(), self.step)
                        (self.out / "samples").mkdir(parents=True, exist_ok=True)
                        (self.out / "samples" / f"step{self.step:07d}.png").write_bytes(encode_png(grid))
                    keep = t["keep_every"] and self.step % t["keep_every"] == 0
                    names = [f"step{self.step:07d}.pt"] if keep else []
                    if self.step % t["checkpoint_every"] == 0 or self.step == max_steps:
                        names.append("last.pt")
                        logger.flush()
                    if names:
                        self.save(*names)
                    if self.step >= max_steps:
                        break
                else:
                    self.epoch += 1
                    self.batch_in_epoch = 0
        finally:
            bar.close()
            logger.close()
        return last
