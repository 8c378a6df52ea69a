"""How far a GAN checkpoint's letter noise moves a word, against a new style, in pixels and in
its writer classifier W's eyes (the calibration of train.div_space = "writer" and its cap).

    python tools/writer_space_distance.py checkpoints/gan_v20/last.pt [--train data/words/train.lmdb]

64 random training words (seed 0), the live G in eval mode, texts as written. Pairs: the same
style with two letter noises ("noise"), two prior styles with one noise ("z"), and the style codes
(E) of two different real words ("E swap"). Prints the mean pixel distance (health.word_l1), the
distance of W's map after each down-sampling stage (GanTrainer.writer_distance), and of W's pooled features
(what W names the writer from).
"""
from __future__ import annotations

import argparse

import torch

from htr_augment.gan.data import encode_texts
from htr_augment.gan.health import word_l1
from htr_augment.gan.writer_probe import build


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--train", default="data/words/train.lmdb", help="the run's training LMDB")
    args = p.parse_args()
    torch.manual_seed(0)
    tr = build(args.checkpoint, args.train, "cpu")
    tr.resume(args.checkpoint)
    G, W = tr.G.eval(), tr.W.eval()
    ds = tr.dataset
    batch = tr.collate([ds[i] for i in torch.randperm(len(ds))[:64].tolist()])
    x, w = batch["images"] * 2 - 1, batch["widths"]
    tokens, lengths, _ = encode_texts(batch["texts"], tr.alphabet)
    n, widths = len(lengths), lengths * G.px_per_char
    with torch.no_grad():
        z, z2 = tr.prior_z(n), tr.prior_z(n)
        noise, noise2 = tr.letter_noise(n, tokens.shape[1]), tr.letter_noise(n, tokens.shape[1])
        style, _, _ = tr._encode(tr.E, x, w)
        other = torch.roll(torch.arange(n), 1)
        zero = torch.zeros_like(noise)
        pairs = {"noise": (G(tokens, lengths, z, noise), G(tokens, lengths, z, noise2)),
                 "z": (G(tokens, lengths, z, noise), G(tokens, lengths, z2, noise)),
                 "E swap": (G(tokens, lengths, style, zero), G(tokens, lengths, style[other], zero))}
        print("pixels:", ", ".join(f"{k} {float(word_l1(a, b, widths).mean()):.3f}" for k, (a, b) in pairs.items()))
        for stage in range(1, W.stages + 1):
            print(f"W map, stage {stage}:", ", ".join(f"{k} {float(tr.writer_distance(a, b, widths, stage).mean()):.3f}"
                                                      for k, (a, b) in pairs.items()))
        pooled = {k: (W.features(tr.w_view(a, widths), widths) - W.features(tr.w_view(b, widths), widths)).abs().mean()
                  for k, (a, b) in pairs.items()}
        print("W pooled features:", ", ".join(f"{k} {float(v):.3f}" for k, v in pooled.items()))


if __name__ == "__main__":
    main()
