"""Which images a rank reads, in which order, and the augmentation seed of each.

Training uses `FullBatchDistributedSampler` (torch's `DistributedSampler`, padded to whole batches; call
``set_epoch(epoch)`` every epoch, also with one worker); validation uses `ShardedEvalSampler`, which never pads, so
that each image is evaluated exactly once across ranks. `SeededSampler` pairs each index with its augmentation seed,
a function of (run seed, epoch, index) only: whichever process or engine prepares an image, and whether or not the
run was resumed in the middle of an epoch, the image is augmented the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from torch.utils.data import DistributedSampler, Sampler


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed of (run seed, epoch, index), hashed by numpy's SeedSequence: no two triples collide by
    construction (an arithmetic mix would once indices pass its multiplier)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class ShardedEvalSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...``: disjoint shards covering every index once, unpadded."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.indices = list(range(rank, num_samples, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class FullBatchDistributedSampler(DistributedSampler):
    """torch's `DistributedSampler`, padded so that every rank's shard is a whole number of batches.

    Each epoch (``set_epoch``) every image is seen at least once across all ranks; the fewer than
    ``world_size * batch_size`` repeats fill the last batches, so no image is dropped and every
    batch has exactly ``batch_size`` images.
    """

    def __init__(
        self, dataset, batch_size: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        per_step = batch_size * num_replicas
        self.num_samples = math.ceil(len(dataset) / per_step) * batch_size  # per rank
        self.total_size = self.num_samples * num_replicas  # the parent pads its index list to this
        self._skip = 0

    def skip(self, count: int) -> None:
        """The next pass starts `count` indices into this epoch's shard (a run resumed inside an epoch)."""
        self._skip = count

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self._skip :])


class SeededSampler(Sampler[tuple[int, int]]):
    """`sampler`'s indices as ``(index, item_seed(seed, epoch, index))`` keys of `DetectionDataset`.

    ``set_epoch`` and ``skip`` go to the wrapped sampler (the training loop calls them on ``loader.sampler``).
    The keys are made here, in the process that iterates the sampler, so DataLoader worker processes and Ray Data
    tasks need no random state of their own.
    """

    def __init__(self, sampler: Sampler[int], seed: int) -> None:
        self.sampler, self.seed = sampler, seed

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):  # a validation sampler has no epochs
            self.sampler.set_epoch(epoch)

    def skip(self, count: int) -> None:
        if hasattr(self.sampler, "skip"):
            self.sampler.skip(count)
        elif count:
            raise ValueError(f"{type(self.sampler).__name__} cannot skip {count} items")

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = getattr(self.sampler, "epoch", 0)
        return ((index, item_seed(self.seed, epoch, index)) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)
