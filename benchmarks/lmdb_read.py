"""Images/s of LmdbWordDataset through a DataLoader vs. decoding the same PNG files from a folder.

    python -m benchmarks.lmdb_read --data ../shared/data/copiste --split val

Both sides decode, resize and normalise with the same functions (htr_augment.images),
through the same DataLoader settings, alternating runs; the ratio is what to read.
"""
from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from htr_augment.data import CTCCollate, LmdbWordDataset, WordSample
from htr_augment.data.build_lmdb import BuildOptions, build
from htr_augment.data.sources import read_tsv
from htr_augment.images import read_image, to_tensor


class FolderDataset(Dataset):
    """The reference: PNG files decoded from disk, item by item."""

    def __init__(self, items: list[tuple[str, str, str]], height: int):
        self.items = items  # (path, text, writer)
        self.height = height

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        path, text, writer = self.items[idx]
        return WordSample(to_tensor(read_image(path), self.height), text, writer)


def images_per_second(ds, collate, workers, batch_size, repeats):
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0)
    best = 0.0
    for _ in range(repeats):
        start, n = time.perf_counter(), 0
        for batch in loader:
            n += len(batch["texts"])
        best = max(best, n / (time.perf_counter() - start))
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/copiste", help="folder with lines.tsv (default %(default)s)")
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=int, default=600, help="images to read (default %(default)s)")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="passes per side; the best is kept")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    tsv = Path(args.data) / "lines.tsv"
    items = list(read_tsv(tsv, args.split))[: args.limit]
    with open(tsv, encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r["split"] == args.split]
    rows = rows[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        build(items, Path(tmp) / "b.lmdb", BuildOptions(), inputs=[str(tsv)], progress=False)
        lmdb_ds = LmdbWordDataset(Path(tmp) / "b.lmdb", height=args.height)
        folder_ds = FolderDataset([(str(tsv.parent / r["file"]), r["text"], r["document"]) for r in rows],
                                  args.height)
        collate = CTCCollate(lmdb_ds.alphabet)
        rates = {"folder": [], "lmdb": []}
        for _ in range(2):  # alternate so that cache warm-up favours neither side
            rates["folder"].append(images_per_second(folder_ds, collate, args.workers, args.batch_size, args.repeats))
            rates["lmdb"].append(images_per_second(lmdb_ds, collate, args.workers, args.batch_size, args.repeats))
    folder, lmdb = max(rates["folder"]), max(rates["lmdb"])
    print(f"{len(items)} images of {args.data} ({args.split}), height {args.height}, "
          f"{args.workers} workers, batch {args.batch_size}")
    print(f"  folder of PNG files : {folder:8.1f} images/s")
    print(f"  LmdbWordDataset     : {lmdb:8.1f} images/s")
    print(f"  ratio lmdb / folder : {lmdb / folder:8.2f}")


if __name__ == "__main__":
    main()
