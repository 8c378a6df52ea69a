"""What does a GAN's writer classifier W read: the hand, or the page?

    python -m htr_augment.gan.writer_probe runs/gan/last.pt --train data/words/train.lmdb
    python -m htr_augment.gan.writer_probe runs/gan/last.pt --train data/words/train.lmdb --fresh 1500

W's writer-identity and contextual terms only move letter shapes if W tells writers apart by
shape. The probe measures W's cross-entropy and accuracy on real training words as they are, with
each word's ink stretched to full (train.w_input = "stretched"), at half their ink, and on G's
reconstructions G(E(x), text(x)) and new texts in E(x), by the EMA and by the live G and E. A W
whose accuracy collapses once the ink is stretched reads the page's ink level, a cue G cannot take
from E(x).

--fresh N trains a new W for N steps (batch 64) on 9 words in 10 for each input view ("raw",
"stretched") and reports its accuracy on the 10th words (unseen words of the same writers), as they
are and at half ink. Reads the checkpoint's own config; CPU unless --device.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from ..atomic import write_atomic
from ..config import merge
from ..data import LmdbWordDataset
from ..training import CheckpointError, DistInfo, load_checkpoint, seed_everything
from .config import DEFAULTS
from .train import recognizer_config_for
from .trainer import GanTrainer, encode_texts, stretch_for_w, writer_loss

VIEWS = ("raw", "stretched")


def build(checkpoint: str, train: str, device: str, w_input: str | None = None) -> GanTrainer:
    saved = load_checkpoint(checkpoint, kind="gan")["config"]
    # the checkpoint's config over today's defaults (options added since it was saved); R as it was built
    config = merge(DEFAULTS, {k: v for k, v in saved.items() if k in DEFAULTS}, where=checkpoint)
    if config["train"]["w_wid"] <= 0:
        raise ValueError(f"{checkpoint}: trained without a writer classifier (train.w_wid = 0)")
    if w_input is not None:
        config["train"]["w_input"] = w_input
    d = config["data"]
    ds = LmdbWordDataset(train, height=d["height"], min_length=d["min_length"], max_length=d["max_length"])
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device(device))
    r_config = saved.get("recognizer_model") or recognizer_config_for(config)
    return GanTrainer(config, r_config, ds, ds.alphabet, "/nonexistent", dist, progress=False)


def mean(rows: list[tuple[float, float]]) -> dict[str, float]:
    return {"ce": sum(r[0] for r in rows) / len(rows), "acc": sum(r[1] for r in rows) / len(rows)}


@torch.no_grad()
def probe_trained(tr: GanTrainer, words: int, batch: int = 64, seed: int = 1) -> dict[str, dict[str, float]]:
    """The checkpoint's W on `words` random training words in seven views (each then read as W reads)."""
    dev, ds, px = tr.dist.device, tr.dataset, tr.G.px_per_char
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:words].tolist()
    # the EMA and the live generator together: a stage shorter than the EMA's horizon shows in the live G first
    generators = {"EMA": (tr.ema.model.eval(), tr.ema_e.model.eval()), "live": (tr.G.eval(), tr.E.eval())}
    rows: dict[str, list[tuple[float, float]]] = {}
    for s in range(0, len(idx), batch):
        real = tr.collate([ds[i] for i in idx[s:s + batch]])
        ink, w, target = real["images"].to(dev), real["widths"].to(dev), tr.writer_targets(real)
        x = ink * 2 - 1
        tokens, lengths, _ = (v.to(dev) for v in encode_texts(real["texts"], tr.alphabet))
        _, new_tokens, new_lengths, _, _ = tr._fake_inputs(len(target), f"probe{s}")
        views = {"real": (x, w), "real, ink stretched": (stretch_for_w(x, w), w), "real, half ink": (ink - 1, w)}
        for name, (G, E) in generators.items():
            style, _ = E(x, w)
            views[f"G reconstruction ({name})"] = (G(tokens, lengths, style), lengths * px)
            views[f"G new text ({name})"] = (G(new_tokens, new_lengths, style), new_lengths * px)
        for name, (v, vw) in views.items():
            ce, acc = writer_loss(tr.W(tr.w_view(v, vw), vw), target)
            rows.setdefault(name, []).append((float(ce), float(acc)))
    return {k: mean(v) for k, v in rows.items()}


def probe_fresh(checkpoint: str, train: str, device: str, steps: int, view: str, batch: int = 64,
                held_out: int = 1024) -> dict[str, float]:
    """A new W trained on `view` words; accuracy on unseen words of the same writers."""
    seed_everything(0)
    tr = build(checkpoint, train, device, w_input=view)  # its W is freshly initialised
    ds, dev = tr.dataset, tr.dist.device
    held = list(range(0, len(ds), 10))[:held_out]
    fit = [i for i in range(len(ds)) if i % 10]
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        real = tr.collate([ds[fit[i]] for i in torch.randint(len(fit), (batch,), generator=g).tolist()])
        tr.w_step(real["images"].to(dev) * 2 - 1, real["widths"].to(dev), real)
    out: dict[str, list[float]] = {"held-out accuracy": [], "held-out accuracy, half ink": []}
    with torch.no_grad():
        for s in range(0, len(held), 128):
            real = tr.collate([ds[i] for i in held[s:s + 128]])
            ink, w, target = real["images"].to(dev), real["widths"].to(dev), tr.writer_targets(real)
            for key, v in (("held-out accuracy", ink), ("held-out accuracy, half ink", ink / 2)):
                out[key].append(float(writer_loss(tr.W(tr.w_view(v * 2 - 1, w), w), target)[1]))
    return {k: sum(v) / len(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="GAN training checkpoint with a writer classifier (runs/NAME/last.pt)")
    p.add_argument("--train", required=True, help="the GAN's training words (LMDB with writer ids)")
    p.add_argument("--words", type=int, default=512, help="training words probed (default 512)")
    p.add_argument("--fresh", type=int, default=0, metavar="STEPS",
                   help="also train a new W for STEPS steps on each input view and test it on unseen words")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    try:
        if args.words < 1 or args.fresh < 0:
            raise ValueError("--words must be positive and --fresh at least 0")
        tr = build(args.checkpoint, args.train, args.device)
        tr.resume(args.checkpoint)
        result = {"checkpoint": args.checkpoint, "step": tr.step, "w_input": tr.config["train"]["w_input"],
                  "trained_w": probe_trained(tr, args.words)}
        print(f"W of {args.checkpoint} (iteration {tr.step}, reads {result['w_input']} words), "
              f"{args.words} training words, {len(tr.writer_ids)} writers:")
        for name, r in result["trained_w"].items():
            print(f"  {name:24s} cross-entropy {r['ce']:6.2f}  accuracy {r['acc']:.3f}")
        if args.fresh:
            result["fresh_w"] = {}
            for view in VIEWS:
                r = result["fresh_w"][view] = probe_fresh(args.checkpoint, args.train, args.device, args.fresh, view)
                print(f"  new W on {view} words, {args.fresh} steps: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()))
        if args.json:
            write_atomic(args.json, json.dumps(result, indent=2).encode())
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"htr_augment.gan.writer_probe: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
