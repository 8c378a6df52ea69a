"""Train the handwriting GAN on real word images.

    python -m htr_augment.gan.train --config configs/gan/base.toml --train words.lmdb --out runs/gan
    torchrun --nproc_per_node 2 -m htr_augment.gan.train --config ... --train ... --out ...

Word images come from `python -m recognizer.segment` on line data. Checkpoints
(G, G-EMA, D, R, optimizers, alphabet, config) go to OUT/last.pt atomically; rerun
with --resume to continue exactly. Ctrl-C or SIGTERM (`kill`) finishes the current iteration,
saves OUT/last.pt and exits (a second one stops at once); so does --time-limit when it runs out
(a lent GPU or a job slot: `--time-limit 420` trains 7 minutes and leaves a resumable checkpoint). TensorBoard logs and metrics.csv are in OUT,
sample grids in OUT/samples/.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ConfigError
from ..data import LmdbWordDataset
from ..training import CheckpointError, cleanup_distributed, init_distributed
from ..training.stop import check_time_limit
from .config import load_gan_config
from .trainer import GanTrainer, NonFiniteLoss


def recognizer_config_for(config: dict) -> dict:
    from recognizer.config import load_recognizer_config, make_config
    path = config["recognizer"]["config"]
    rc = load_recognizer_config(path) if path else make_config()
    rc["data"]["height"] = config["data"]["height"]  # R reads G's images
    return rc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="GAN TOML config (configs/gan/tiny.toml, cpu.toml, base.toml)")
    p.add_argument("--train", required=True, help="LMDB of real word images (from recognizer.segment)")
    p.add_argument("--val", help="LMDB of held-out real words (validation writers) for the health "
                   "metrics every train.eval_every iterations: D's AUC, the live and EMA G's R-CER, ink, diversity")
    p.add_argument("--out", required=True, help="run directory: checkpoints, logs, samples")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--init-from", metavar="CKPT", help="start a new run in OUT from another run's checkpoint, "
                   "under a config that adds zero-initialised modules (generator.char_style): weights, step "
                   "and style prior are taken; the generator's optimizer starts afresh if its parameters changed")
    p.add_argument("--recognizer", help="start R from this trained word-recognizer checkpoint "
                   "(default: the config's recognizer.checkpoint, else from scratch)")
    p.add_argument("--max-steps", type=int, help="override train.max_steps")
    p.add_argument("--time-limit", type=float, metavar="SECONDS", help="stop after this many seconds of "
                   "training, at the end of an iteration, with OUT/last.pt saved (as on SIGTERM)")
    p.add_argument("--device", help="cpu, cuda (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        # Checked before the datasets are read and the networks built.
        if args.resume and args.init_from:
            raise ValueError("--resume continues OUT/last.pt; --init-from starts a new run from another "
                             "checkpoint: give one")
        if args.init_from and (out / "last.pt").is_file():
            raise CheckpointError(f"--init-from: {out / 'last.pt'} exists; continue that run with --resume, "
                                  "or choose another --out")
        check_time_limit(args.time_limit, "--time-limit")  # before the data are read
        config = load_gan_config(args.config)
        d = config["data"]
        dist = init_distributed(args.device)
        dataset = LmdbWordDataset(args.train, height=d["height"], min_length=d["min_length"],
                                  max_length=d["max_length"])
        val = None
        if args.val:  # the training alphabet: validation words with other characters are left out
            val = LmdbWordDataset(args.val, height=d["height"], min_length=d["min_length"],
                                  max_length=d["max_length"], alphabet=dataset.alphabet)
        trainer = GanTrainer(config, recognizer_config_for(config), dataset, dataset.alphabet, out, dist,
                             progress=not args.no_progress, val_dataset=val)
        if args.init_from:
            trainer.resume(args.init_from, warm=True)
        elif args.resume:
            if not (out / "last.pt").is_file():
                raise CheckpointError(f"--resume: no {out / 'last.pt'} to continue from")
            trainer.resume(out / "last.pt")
        elif args.recognizer or config["recognizer"]["checkpoint"]:
            trainer.load_recognizer(args.recognizer or config["recognizer"]["checkpoint"])
        trainer.fit(args.max_steps, args.time_limit)
        if trainer.interrupted:
            why = "a signal" if trainer.stop_reason == "signal" else f"the time limit ({args.time_limit:g} s)"
            print(f"htr_augment.gan.train: stopped by {why} at iteration {trainer.step}; saved "
                  f"{out / 'last.pt'} (continue with --resume)", file=sys.stderr)
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"htr_augment.gan.train: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLoss as e:
        print(f"htr_augment.gan.train: stopped: {e}. The last checkpoint is {out / 'last.pt'}; the last "
              f"one that passed the health check is {out / 'healthy.pt'}", file=sys.stderr)
        return 3
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
