"""Which images a rank reads, in which order, and the augmentation seed of each.

Training uses `GlobalBatchSampler` (one shuffle per epoch laid out by optimizer step, the same at any world size;
call ``set_epoch(epoch)`` every epoch, also with one worker); validation uses `ShardedEvalSampler`, which never pads, so
that each image is evaluated exactly once across ranks. `SeededSampler` pairs each index with its augmentation seed,
a function of (run seed, epoch, index) only: whichever process or engine prepares an image, and whether or not the
run was resumed in the middle of an epoch, the image is augmented the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Sampler


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


@dataclass(frozen=True)
class StepLayout:
    """How one optimizer step's global batch is cut and shared: `chunks` micro-batches of `batch_size` images per
    step (global batch = chunks x batch_size, whatever the world size), chunk k to rank ``k % world_size``. The first
    ``chunks % world_size`` ranks take one chunk more when the world does not divide them (an elastic run below its
    largest size); `loss_weight` keeps the step's gradient the mean over all chunks either way."""

    batch_size: int
    chunks: int  # micro-batches per optimizer step, over all ranks: max workers x train.grad_accum_steps
    world_size: int
    rank: int
    steps_per_epoch: int

    def __post_init__(self) -> None:
        if not 1 <= self.world_size <= self.chunks or not 0 <= self.rank < self.world_size:
            raise ValueError(
                f"need 0 <= rank < world_size <= chunks, got rank {self.rank}, world {self.world_size}, "
                f"chunks {self.chunks}"
            )

    @property
    def global_batch(self) -> int:
        return self.chunks * self.batch_size

    @property
    def batches_per_step(self) -> int:
        """This rank's micro-batches per step: its gradient accumulation."""
        return len(range(self.rank, self.chunks, self.world_size))

    @property
    def loss_weight(self) -> float:
        """Each micro-batch's loss factor: DDP averages the ranks' gradients (1 / world), so world / chunks makes the
        step's gradient the plain mean over its chunks, however many each rank took."""
        return self.world_size / self.chunks


class GlobalBatchSampler(Sampler[int]):
    """This rank's indices of one epoch, laid out by optimizer step (`StepLayout`).

    Each epoch is one shuffle of all images (seeded by (seed, epoch) only, as torch's `DistributedSampler`), padded
    with its first images to whole steps; step s takes positions ``[s * global_batch, (s + 1) * global_batch)``,
    cut into chunks. A step's images and its chunks do not depend on the world size, so a run resized between steps
    (elastic training) trains every image once per epoch, in the same micro-batches (hence the same BatchNorm
    batches), and resuming at step s of an epoch skips exactly the steps done at any size.
    """

    def __init__(
        self,
        num_images: int,
        batch_size: int,
        chunks: int = 1,
        world_size: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        if num_images < 1 or batch_size < 1:
            raise ValueError(f"need images and a batch size >= 1, got {num_images}, {batch_size}")
        steps = math.ceil(num_images / (chunks * batch_size))
        self.layout = StepLayout(batch_size, chunks, world_size, rank, steps)
        self.num_images, self.shuffle, self.seed = num_images, shuffle, seed
        self.epoch, self._skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, count: int) -> None:
        """The next pass starts `count` indices into this rank's share of the epoch (a run resumed inside it)."""
        self._skip = count

    def epoch_order(self) -> list[int]:
        """All ranks' positions of this epoch: the shuffle, padded to whole steps."""
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_images, generator=generator).tolist()
        else:
            order = list(range(self.num_images))
        total = self.layout.steps_per_epoch * self.layout.global_batch
        return [order[i % self.num_images] for i in range(total)]

    def __iter__(self) -> Iterator[int]:
        order, layout = self.epoch_order(), self.layout
        mine = [
            order[(step * layout.chunks + chunk) * layout.batch_size + i]
            for step in range(layout.steps_per_epoch)
            for chunk in range(layout.rank, layout.chunks, layout.world_size)
            for i in range(layout.batch_size)
        ]
        return iter(mine[self._skip :])

    def __len__(self) -> int:
        """This rank's indices per epoch (before a skip)."""
        return self.layout.steps_per_epoch * self.layout.batches_per_step * self.layout.batch_size


class SeededSampler(Sampler[tuple[int, int]]):
    """`sampler`'s indices as ``(index, item_seed(seed, epoch, index))`` keys of `DetectionDataset`.

    ``set_epoch`` and ``skip`` go to the wrapped sampler (the training loop calls them on ``loader.sampler``).
    The keys are made here, in the process that iterates the sampler, so DataLoader worker processes and Ray Data
    tasks need no random state of their own.
    """

    def __init__(self, sampler: Sampler[int], seed: int) -> None:
        self.sampler, self.seed = sampler, seed
        self.layout: StepLayout | None = getattr(sampler, "layout", None)  # a training sampler's step layout

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
