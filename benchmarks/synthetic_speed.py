"""How fast are generated words, and how much do they slow recognizer training down?

    python -m benchmarks.synthetic_speed                          # the default word study's data
    python -m benchmarks.synthetic_speed --data data/words --generator G.pt
    python -m benchmarks.synthetic_speed --config configs/benchmark/gpu.toml

(a) Words per second of SyntheticWordDataset through a DataLoader: on the CPU in the
    config's DataLoader workers (as training reads them), and on CUDA in the main process
    when a GPU is available. This is the rate at which the benchmark's cache is built.
(b) The cache, as benchmarks.run builds it (OUT/cache, the same key: generator SHA-256,
    lexicon, count, seed, height), with its build time reported apart; reused on rerun.
(c) The recognizer's training-step time at the synthetic ratio (default: the config's, 0.5)
    with the cached words divided by its step time at ratio 0: one model, one batch size,
    the same real data through MixingBatchSampler, in blocks of steps that alternate between
    the two (and swap which goes first each round) so that warm-up and drift favour
    neither; the first round of each is not timed. A step does what recognizer.train does:
    read and augment the batch, forward, CTC loss, backward, clip, AdamW. Aim: at most 1.15.

The numbers are printed as measured; nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from htr_augment.atomic import write_atomic
from htr_augment.data import CTCCollate, LmdbWordDataset
from htr_augment.images import pad_batch
from htr_augment.mixing import MixedDataset, MixingBatchSampler
from htr_augment.synthetic import SyntheticWordDataset
from htr_augment.training import seed_everything, select_device
from recognizer.augment import AugmentedDataset, Augmenter
from recognizer.losses import ctc_losses
from recognizer.model import CRNN

from .run import (DEFAULT_CONFIG, DEFAULT_DATA, BenchmarkError, cache_source_words, load_settings, make_source,
                  resolve_data, synthetic_texts, word_splits)

AIM = 1.15


def _images_only(samples):
    return pad_batch([s.image for s in samples])


def words_per_second(generator: str, words: list[str], height: int, device: str, workers: int, n: int) -> float:
    """Generated words/s in steady state: the first batch (worker start, generator load) is not timed."""
    ds = SyntheticWordDataset(generator, words, length=n, seed=0, height=height, device=device)
    loader = DataLoader(ds, batch_size=ds.chunk_size, num_workers=workers, collate_fn=_images_only)
    it = iter(loader)
    next(it)
    start, count = time.perf_counter(), 0
    for images, _ in it:
        count += images.shape[0]
    return count / max(1e-9, time.perf_counter() - start)


def _batches(config: dict, dataset: MixedDataset, ratio: float, collate: CTCCollate):
    """Endless training batches, one DataLoader per epoch as in recognizer.train."""
    tc = config["train"]
    sampler = MixingBatchSampler(dataset, tc["batch_size"], ratio, seed=tc["seed"])
    data = AugmentedDataset(dataset, Augmenter(config["augment"]), seed=tc["seed"]) \
        if config["augment"]["enabled"] else dataset
    for epoch in range(1_000_000):
        sampler.set_epoch(epoch)
        yield from DataLoader(data, batch_sampler=sampler, collate_fn=collate, num_workers=tc["num_workers"])


def step_times(config: dict, real, synthetic, alphabet, ratio: float, device: torch.device, steps: int,
               block: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Mean seconds per step of each timed block, per arm ("real", "mixed"), and the mean padded
    pixels per timed batch of each arm (a step's work grows with them)."""
    tc = config["train"]
    seed_everything(tc["seed"])
    model = CRNN(config, len(alphabet)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc["lr"], weight_decay=tc["weight_decay"])
    collate = CTCCollate(alphabet, model.stride)
    streams = {"real": _batches(config, MixedDataset(real, []), 0.0, collate),
               "mixed": _batches(config, MixedDataset(real, synthetic), ratio, collate)}
    clip = tc["grad_clip"] if tc["grad_clip"] > 0 else float("inf")

    def step(batch):
        out = model(batch["images"].to(device), batch["widths"])
        loss, _, _ = ctc_losses(out, batch["targets"].to(device), batch["target_lengths"].to(device),
                                tc["shortcut_weight"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()

    times: dict[str, list[float]] = {"real": [], "mixed": []}
    pixels = {"real": 0, "mixed": 0}
    for round_ in range(math.ceil(steps / block) + 1):  # round 0 warms both up, untimed
        for arm in ("real", "mixed") if round_ % 2 == 0 else ("mixed", "real"):
            start = time.perf_counter()
            for _ in range(block):
                batch = next(streams[arm])  # reading the batch is part of the step
                step(batch)
                if round_:
                    pixels[arm] += batch["images"].numel()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if round_:
                times[arm].append((time.perf_counter() - start) / block)
    return times, {arm: n / (len(times[arm]) * block) for arm, n in pixels.items()}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.synthetic_speed", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", metavar="CKPT", help="GAN checkpoint (default: the weights shipped in the package)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="benchmark TOML: recognizer config, batch size, "
                   "DataLoader workers, ratio (default %(default)s)")
    p.add_argument("--data", metavar="DIR",
                   help=f"real training data, as benchmarks.run --data (default {DEFAULT_DATA})")
    p.add_argument("--out", metavar="DIR", help="benchmark folder whose data/ and cache/ are used and filled "
                   "(default: benchmarks.run's, runs/benchmark/<config name>)")
    p.add_argument("--pool", type=int, default=2000, help="synthetic words cached for (b) and (c) (default "
                   "%(default)s; the step time does not depend on it)")
    p.add_argument("--ratio", type=float, help="synthetic fraction of each batch (default: the config's)")
    p.add_argument("--steps", type=int, default=60, help="timed steps per arm (default %(default)s)")
    p.add_argument("--block", type=int, default=10,
                   help="steps per block before switching arms (default %(default)s)")
    p.add_argument("--words", type=int, default=512, help="words generated for (a) (default %(default)s)")
    p.add_argument("--device", help="device of (b) (default: the config's; auto = cuda if available)")
    p.add_argument("--num-workers", type=int, help="DataLoader workers (default: the config's train.num_workers)")
    p.add_argument("--json", metavar="FILE", help="also write the numbers to FILE (JSON)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.block < 1 or args.words < 1 or args.pool < 1:
        p.error("--steps, --block, --words and --pool must be positive")
    return args


def run(args: argparse.Namespace) -> dict:
    settings, config = load_settings(args.config)
    if args.num_workers is not None:
        config["train"]["num_workers"] = args.num_workers
    ratio = settings["synthetic_ratio"] if args.ratio is None else args.ratio
    batch = config["train"]["batch_size"]
    if not 0 < ratio < 1 or not 1 <= round(ratio * batch) < batch:
        raise BenchmarkError(f"--ratio {ratio} x batch size {batch}: need between 1 and {batch - 1} synthetic "
                             "samples per batch")
    source = make_source("gan", args.generator, None, alternatives="")
    out = Path(args.out or Path("runs") / "benchmark" / Path(args.config).stem)
    device = select_device(args.device or settings["device"])
    splits = resolve_data(args.data or DEFAULT_DATA, out / "data", progress=False)
    if settings["level"] == "words":
        splits, _ = word_splits(splits, settings["segmenter"], out / "data", device, settings["segment_min_score"],
                                progress=False)
    height = config["data"]["height"]
    real = LmdbWordDataset(splits.train, height=height)
    words = synthetic_texts(source, real, real.alphabet)
    workers = config["train"]["num_workers"]
    gen = str(source.generator)
    rates = {"cpu": words_per_second(gen, words, height, "cpu", workers, args.words)}
    if torch.cuda.is_available():
        rates["cuda"] = words_per_second(gen, words, height, "cuda", 0, args.words)

    cache = cache_source_words(source, words, {**settings, "synthetic_pool": args.pool}, height, out / "cache",
                               device, workers, progress=False)
    synth = LmdbWordDataset(cache.path, height=height, alphabet=real.alphabet)
    times, pixels = step_times(config, real, synth, real.alphabet, ratio, device, args.steps, args.block)
    real_s, mixed_s = statistics.fmean(times["real"]), statistics.fmean(times["mixed"])
    return {"generator": gen, "generator_sha256": source.sha256, "config": str(Path(args.config).resolve()),
            "recognizer_config": settings["recognizer"], "data": str(splits.train), "height": height,
            "words_per_second": rates, "dataloader_workers": workers, "device": str(device), "batch_size": batch,
            "cache": {"path": str(cache.path), "words": cache.words, "build_s": cache.build_s, "reused": cache.reused},
            "ratio": ratio, "timed_steps_per_arm": len(times["real"]) * args.block, "block": args.block,
            "step_s": {"real": real_s, "mixed": mixed_s}, "block_step_s": times,
            "step_time_ratio": mixed_s / real_s, "aim": AIM,
            # The generated words are longer on average (the lexicon's words drawn uniformly, not at their
            # frequencies in running text), so the mixed batches are wider: the work per pixel is the comparison
            # that isolates what reading cached synthetic words costs.
            "batch_pixels": pixels, "pixel_ratio": pixels["mixed"] / pixels["real"],
            "step_time_ratio_per_pixel": (mixed_s / real_s) / (pixels["mixed"] / pixels["real"]),
            # Robust to another job's bursts on a shared CPU, which inflate single blocks of either arm.
            "step_time_ratio_median_round": statistics.median(m / r for m, r in zip(times["mixed"], times["real"]))}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        r = run(args)
    except (OSError, ValueError) as e:  # BenchmarkError, CheckpointError, missing files
        print(f"benchmarks.synthetic_speed: error: {e}", file=sys.stderr)
        return 2
    print(f"generator {r['generator']} (SHA-256 {r['generator_sha256'][:12]}), height {r['height']}")
    for dev, rate in r["words_per_second"].items():
        where = f"{r['dataloader_workers']} DataLoader worker(s)" if dev == "cpu" else "main process"
        print(f"(a) generated words/s on {dev:4s} ({where}): {rate:8.1f}")
    c = r["cache"]
    print(f"(b) cache of {c['words']:,} generated words: {'reused, ' if c['reused'] else ''}built in "
          f"{c['build_s']:.1f} s ({c['path']})")
    blocks = [m / b for m, b in zip(r["block_step_s"]["mixed"], r["block_step_s"]["real"])]
    print(f"(c) recognizer step on {r['device']}, batch {r['batch_size']}, {r['timed_steps_per_arm']} timed steps "
          f"per arm: {1000 * r['step_s']['real']:.1f} ms at ratio 0, {1000 * r['step_s']['mixed']:.1f} ms at "
          f"ratio {r['ratio']:g}")
    print(f"    step-time ratio {r['ratio']:g} / 0: {r['step_time_ratio']:.3f} "
          f"(per round {min(blocks):.2f} - {max(blocks):.2f}, median {r['step_time_ratio_median_round']:.2f}); "
          f"aim <= {AIM}: "
          f"{'met' if r['step_time_ratio'] <= AIM else 'NOT met'}")
    print(f"    padded pixels per batch, ratio {r['ratio']:g} / 0: {r['pixel_ratio']:.3f}; step time per pixel, "
          f"ratio {r['ratio']:g} / 0: {r['step_time_ratio_per_pixel']:.3f}")
    if args.json:
        write_atomic(args.json, json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
