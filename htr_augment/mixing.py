"""Mixing synthetic words into real training data at a fixed fraction of every batch.

    mixed = MixedDataset(real, synthetic)
    sampler = MixingBatchSampler(mixed, batch_size=16, ratio=0.5, seed=0)   # 8 real + 8 synthetic
    loader = DataLoader(mixed, batch_sampler=sampler, collate_fn=CTCCollate(alphabet))

An epoch is one pass over the real data (this rank's share of it under DDP), so
schedules and step counts mean the same with or without synthetic data.

InterleavedDataset takes items round robin from several synthetic sources (item 2k of two
parts is the first part's item k, item 2k + 1 the second's), so any run of consecutive
indices, as MixingBatchSampler reads synthetic words, holds each source in equal shares:

    synthetic = InterleavedDataset(SyntheticWordDataset(None, words), FontWordDataset(words))
"""
from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset, Sampler, Subset

from .training.distributed import get_rank, get_world_size


class MixedDataset(Dataset):
    """Indices [0, len(real)) are real samples, the following len(synthetic) synthetic ones."""

    def __init__(self, real: Dataset, synthetic: Dataset):
        self.real, self.synthetic = real, synthetic
        self.n_real, self.n_synthetic = len(real), len(synthetic)

    def __len__(self) -> int:
        return self.n_real + self.n_synthetic

    def __getitem__(self, i: int):
        return self.real[i] if i < self.n_real else self.synthetic[i - self.n_real]

    def set_epoch(self, epoch: int) -> None:
        for part in (self.real, self.synthetic):
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)


class MixingBatchSampler(Sampler[list[int]]):
    """Batches of `batch_size` with round(ratio * batch_size) synthetic samples.

    Real indices: a permutation seeded by (seed, epoch), sharded rank::world_size with
    equal shares (the DistributedSampler convention, without padding). Synthetic
    indices: whole chunks of `chunk_size` consecutive indices in a seeded random chunk
    order, so SyntheticWordDataset generates each chunk in one forward pass; every
    rank reads different chunks. Call set_epoch(epoch) each epoch (the trainer does)."""

    def __init__(self, dataset: MixedDataset, batch_size: int, ratio: float, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None, chunk_size: int = 32,
                 drop_last: bool = False):
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"synthetic ratio must be in [0, 1), got {ratio} (an epoch is counted by real data)")
        self.n_real, self.n_synthetic = dataset.n_real, dataset.n_synthetic
        self.n_syn_batch = round(ratio * batch_size)
        self.n_real_batch = batch_size - self.n_syn_batch
        if self.n_real_batch < 1:
            raise ValueError(f"ratio {ratio} leaves no real sample in a batch of {batch_size}")
        if self.n_syn_batch and self.n_synthetic == 0:
            raise ValueError("synthetic ratio > 0 but the synthetic dataset is empty")
        self.batch_size, self.ratio, self.seed = batch_size, ratio, seed
        self.rank = get_rank() if rank is None else rank
        self.world = get_world_size() if world_size is None else world_size
        self.chunk_size, self.drop_last = chunk_size, drop_last
        self.epoch = 0
        self.real_per_rank = self.n_real // self.world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = self.real_per_rank / self.n_real_batch
        return math.floor(n) if self.drop_last else math.ceil(n)

    def _synthetic_stream(self):
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_009 + 7)
        chunks = math.ceil(self.n_synthetic / self.chunk_size)
        while True:
            order = torch.randperm(chunks, generator=g).tolist()
            for c in order[self.rank::self.world] or order:
                for i in range(c * self.chunk_size, min(self.n_synthetic, (c + 1) * self.chunk_size)):
                    yield self.n_real + i

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n_real, generator=g).tolist()
        real = perm[: self.real_per_rank * self.world][self.rank::self.world]
        synthetic = self._synthetic_stream()
        for b in range(len(self)):
            batch = real[b * self.n_real_batch:(b + 1) * self.n_real_batch]
            n_syn = round(len(batch) * self.n_syn_batch / self.n_real_batch)  # keep the ratio in a short last batch
            yield batch + [next(synthetic) for _ in range(n_syn)]


class InterleavedDataset(Dataset):
    """Items round robin from `parts`: item j is parts[j % P][j // P], for as many rounds as the
    shortest part allows (the length is P x the shortest length)."""

    def __init__(self, *parts: Dataset):
        if len(parts) < 2:
            raise ValueError("InterleavedDataset needs at least two datasets")
        self.parts = parts
        self.rounds = min(len(p) for p in parts)
        if self.rounds == 0:
            raise ValueError("InterleavedDataset: one of the datasets is empty")

    def __len__(self) -> int:
        return self.rounds * len(self.parts)

    def __getitem__(self, i: int):
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} interleaved items")
        k, part = divmod(i, len(self.parts))
        return self.parts[part][k]

    def set_epoch(self, epoch: int) -> None:
        for part in self.parts:
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)


def interleave(*parts: Dataset, length: int | None = None) -> Dataset:
    """One dataset as it is; several round robin (InterleavedDataset), cut to their first
    `length` items when given."""
    if len(parts) == 1:
        return parts[0]
    mixed = InterleavedDataset(*parts)
    return mixed if length is None else Subset(mixed, range(length))
