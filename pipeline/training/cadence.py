"""Inside an evaluation period: the ranks' collectives, when a checkpoint is due, and rank 0's progress snapshot.

A checkpoint is a barrier (`ray.train.report`), so every rank must decide alike: steps are the same everywhere,
and for minutes rank 0's clock is broadcast. Progress is rank 0's alone, with no collective: ranks reach a given
moment at different steps.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from pipeline.training.loop import Trainer


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(values: torch.Tensor) -> None:
    if rank_and_world()[1] > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)  # gloo reduces CPU tensors; float64 avoids drift


def all_reduce_max(value: float) -> float:
    if rank_and_world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t[0])


def checkpoint_due(trainer: Trainer) -> bool:
    """After an optimizer step: is a between-evaluations checkpoint due? Every rank gets the same answer (steps are
    the same everywhere; for minutes, rank 0's clock is broadcast, one scalar per step)."""
    train = trainer.config.train
    if train.checkpoint_every_steps and trainer.position.step % train.checkpoint_every_steps == 0:
        return True
    if train.checkpoint_every_minutes is None:
        return False
    rank, world = rank_and_world()
    due = rank == 0 and time.perf_counter() - trainer.last_checkpoint >= 60 * train.checkpoint_every_minutes
    if world > 1:
        flag = torch.tensor([float(due)], device=trainer.device if dist.get_backend() == "nccl" else "cpu")
        dist.broadcast(flag, src=0)
        due = bool(flag.item())
    return due


def progress_snapshot(
    trainer: Trainer, sums: torch.Tensor, first_step: int, start: float, waited: float
) -> dict[str, float]:
    """Rank 0's view of the period so far, which began at `first_step` and `start` (no collective: ranks reach
    this at different times)."""
    _, world = rank_and_world()
    seconds, images = max(time.perf_counter() - start, 1e-9), max(1.0, float(sums[3]))
    return {
        "step": trainer.position.step,
        "train_loss": float(sums[0]) / images,
        "images_per_s": images * world / seconds,  # every rank trains as many images
        "data_wait_share": waited / seconds,
        "lr": trainer.optimizer.param_groups[0]["lr"],
        "seconds_per_step": seconds / max(1, trainer.position.step - first_step),
    }
