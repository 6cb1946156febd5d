"""Inside an evaluation period: the ranks' collectives, what follows a step (a checkpoint, a stop), and rank 0's
progress snapshot.

A checkpoint is a barrier (`ray.train.report`), so every rank must decide alike: steps are the same everywhere,
and what only rank 0 knows (its clock for checkpoints by minutes, a stop request, a preemption notice) is
broadcast. Progress is rank 0's alone, with no collective: ranks reach a given moment at different steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipeline.training.distributed import rank_and_world
from pipeline.training.trainer import Trainer

# what rank 0 may ask of every rank after a step, broadcast as one code
MINUTES_DUE, STOP_REQUESTED, PREEMPTION_NOTICE = 1, 2, 4
Interrupts = Callable[[], str | None]  # rank 0's poll: "stop" (a graceful stop), "preemption" (a notice) or None


@dataclass(frozen=True)
class AfterStep:
    """What every rank does after an optimizer step: checkpoint (and why), and whether to stop afterwards."""

    reason: str = ""  # "" (nothing), "stop", "preemption", "steps" or "minutes"
    stop: bool = False

    @property
    def checkpoint(self) -> bool:
        return bool(self.reason)


def after_step(trainer: Trainer, interrupts: Interrupts | None = None) -> AfterStep:
    """After an optimizer step: is a checkpoint due, and must the run stop? Every rank gets the same answer: steps
    are the same everywhere, and rank 0's clock and `interrupts` poll are broadcast (one scalar per step, only when
    minutes or interrupts are watched)."""
    train = trainer.config.train
    rank, world = rank_and_world()
    code = 0
    if rank == 0:
        minutes = train.checkpoint_every_minutes
        if minutes is not None and time.perf_counter() - trainer.last_checkpoint >= 60 * minutes:
            code |= MINUTES_DUE
        signal = interrupts() if interrupts is not None else None
        code |= {"stop": STOP_REQUESTED, "preemption": PREEMPTION_NOTICE}.get(signal or "", 0)
    if world > 1 and (train.checkpoint_every_minutes is not None or interrupts is not None):
        flag = torch.tensor([float(code)], device=trainer.device if dist.get_backend() == "nccl" else "cpu")
        dist.broadcast(flag, src=0)
        code = int(flag.item())
    by_steps = bool(train.checkpoint_every_steps) and trainer.position.step % train.checkpoint_every_steps == 0
    for bit, reason in ((STOP_REQUESTED, "stop"), (PREEMPTION_NOTICE, "preemption")):
        if code & bit:
            return AfterStep(reason, stop=reason == "stop")
    return AfterStep("steps" if by_steps else "minutes" if code & MINUTES_DUE else "")


def progress_snapshot(
    trainer: Trainer, sums: torch.Tensor, first_step: int, start: float, waited: float, share: float
) -> dict[str, float]:
    """Rank 0's view of the period so far, which began at `first_step` and `start` (no collective: ranks reach
    this at different times). `share`: the part of each step's images rank 0 trains (1 / world, or more where
    the world does not divide the step's micro-batches)."""
    seconds, images = max(time.perf_counter() - start, 1e-9), max(1.0, float(sums[3]))
    return {
        "step": trainer.position.step,
        "train_loss": float(sums[0]) / images,
        "images_per_s": images / share / seconds,  # all ranks' images
        "data_wait_share": waited / seconds,
        "lr": trainer.optimizer.param_groups[0]["lr"],
        "seconds_per_step": seconds / max(1, trainer.position.step - first_step),
    }
