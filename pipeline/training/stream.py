"""The training batches as one stream across epochs, grouped into optimizer steps, resumable at any step.

An epoch is one pass of this rank's `GlobalBatchSampler` (a new shuffle per epoch); an optimizer step takes this
rank's share of the step's micro-batches (its `StepLayout`; `grad_accum_steps` for a loader without one) and never
spans two epochs. The position (step, epoch) is what a checkpoint records: a resumed stream skips the steps already
trained in that epoch by index, without loading them, at whatever world size it resumes (elastic training).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch


@dataclass
class Position:
    """Where training stands: optimizer steps done, and the epoch (0-based) and batches of it consumed."""

    step: int = 0
    epoch: int = 0
    batch: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"step": self.step, "epoch": self.epoch, "batch": self.batch}


Batch = tuple[torch.Tensor, list[dict]]


class BatchStream:
    """`next_step()` -> the (1..grad_accum_steps) batches of the next optimizer step, crossing epochs as needed.

    `on_epoch_start(epoch)` (0-based) runs before the first batch of every epoch entered from its start (the
    fault-injection test hook).
    """

    def __init__(
        self,
        loader,
        grad_accum_steps: int,
        position: Position | None = None,
        on_epoch_start: Callable[[int], None] | None = None,
    ) -> None:
        self.loader = loader
        self.layout = getattr(loader.sampler, "layout", None)
        self.accum = self.layout.batches_per_step if self.layout is not None else grad_accum_steps
        self.batches_per_epoch = len(loader.sampler) // loader.batch_size  # whole batches (the sampler pads)
        self.position = Position(**(position or Position()).as_dict())
        if self.layout is not None:  # this rank's batches of the epoch, from the global steps (a resize moves them)
            epoch_step = self.position.step - self.position.epoch * self.layout.steps_per_epoch
            self.position.batch = min(self.batches_per_epoch, epoch_step * self.accum)
        self.on_epoch_start = on_epoch_start
        self._iterator: Iterator[Batch] | None = None

    def loss_weight(self, batches: int) -> float:
        """The factor of each of a step's `batches` micro-batch losses: the mean over the step's global micro-batches
        (`StepLayout.loss_weight`), or over these batches for a loader without a layout."""
        return self.layout.loss_weight if self.layout is not None else 1.0 / batches

    def _start_epoch(self) -> None:
        sampler = self.loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.position.epoch + 1)  # a different shuffle per epoch (1-based, as always)
        if hasattr(sampler, "skip"):
            sampler.skip(self.position.batch * self.loader.batch_size)
        if self.position.batch == 0 and self.on_epoch_start is not None:
            self.on_epoch_start(self.position.epoch)
        self._iterator = iter(self.loader)

    def next_step(self) -> list[Batch]:
        """The batches of one optimizer step; the position moves past them (and to the next epoch at its end)."""
        if self.position.batch >= self.batches_per_epoch:
            self.position.epoch += 1
            self.position.batch = 0
            self._iterator = None
        if self._iterator is None:
            self._start_epoch()
        take = min(self.accum, self.batches_per_epoch - self.position.batch)
        batches = [next(self._iterator) for _ in range(take)]
        self.position.batch += take
        self.position.step += 1
        return batches
