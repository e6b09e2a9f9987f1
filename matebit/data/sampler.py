"""The training data order: an endless, resumable stream of data set indices, each with its own seed."""

from __future__ import annotations

import json
import zlib

import torch
from torch import Tensor


def _seed_of(*parts: int) -> int:
    return zlib.crc32(json.dumps(parts).encode()) & 0x7FFFFFFF


class StreamSampler(torch.utils.data.Sampler):
    """An endless, resumable stream of dataset indices, split across ranks.

    Global sample number p (counted from the start of training) lies in epoch p // n at position p % n of
    that epoch's seeded permutation; rank r of W takes, within each global batch of B * W samples, the slice
    [r * B, (r + 1) * B). That is DistributedSampler's partition, but a pure function of p, so a resumed run
    starts at p = step * B * W and sees exactly the batches it would have seen. Each item also gets its own
    random seed derived from p, so augmentations do not depend on worker processes.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world: int = 1):
        self.n, self.batch, self.seed, self.start = n, batch_size, seed, start_step
        self.rank, self.world = rank, world
        self._perms: dict[int, Tensor] = {}

    def _index(self, p: int) -> int:
        epoch = p // self.n
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(self.n, generator=torch.Generator().manual_seed(
                _seed_of(self.seed, epoch)))}
        return int(self._perms[epoch][p % self.n])

    def __iter__(self):
        step = self.start
        while True:
            base = step * self.batch * self.world + self.rank * self.batch
            for i in range(self.batch):
                p = base + i
                yield (self._index(p), _seed_of(self.seed, p, 1))
            step += 1


class SeededItems(torch.utils.data.Dataset):
    """Wraps a dataset with `get(index, generator)` so that each item's randomness comes from the sampler."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        return self.dataset.get(index, torch.Generator().manual_seed(seed))
