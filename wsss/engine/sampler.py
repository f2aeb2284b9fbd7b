"""A shuffling, rank-sharding sampler that can start mid-epoch.

Each epoch's order is a permutation seeded by (seed, epoch); every index is
yielded with a per-sample seed derived from the same pair, which drives that
sample's augmentation. A run resumed at step s therefore sees exactly the
batches (and augmentations) an uninterrupted run sees, whatever the number of
loader workers.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler):
    def __init__(self, dataset_len: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.n = dataset_len
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world = world_size
        self.epoch = 0
        self.skip = 0
        self.per_rank = math.ceil(self.n / self.world)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """``skip``: samples of this rank's shard already consumed (resume)."""
        self.epoch = epoch
        self.skip = skip

    def epoch_seed(self) -> int:
        return int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.epoch_seed())
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world
        order += order[: total - len(order)]  # pad so every rank gets the same count
        return order[self.rank:total:self.world]

    def __iter__(self):
        seed = self.epoch_seed()
        for idx in self._indices()[self.skip:]:
            yield (idx, seed)

    def __len__(self) -> int:
        return self.per_rank - self.skip
