"""The fault-injection test hook (`train.fault_marker`): rank 0 raises as a chosen epoch starts or right after chosen
optimizer steps, once each (a marker file remembers it), as a crashed worker would."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.training.distributed import rank_and_world

__all__ = ["InjectedFault", "maybe_inject_fault", "record_batch", "record_start"]

_attempt_start = 0  # this process's attempt: the step it started from (`record_start`)


class InjectedFault(RuntimeError):
    """Raised by the `train.fault_marker` test hook to simulate a crashed worker."""


def maybe_inject_fault(config: PipelineConfig, epoch: int | None = None, step: int | None = None) -> None:
    """Test hook: rank 0 raises once as epoch `train.fault_epoch` (1-based) starts, or once right after each optimizer
    step of `train.fault_steps`, leaving a marker file (per step) so that the restarted run goes on."""
    marker, train = config.train.fault_marker, config.train
    if marker is None or rank_and_world()[0] != 0:
        return
    if epoch is not None and epoch == train.fault_epoch and not train.fault_steps:
        where, path = f"epoch {epoch}", Path(marker)
    elif step is not None and step in train.fault_steps:
        where, path = f"step {step}", Path(f"{marker}.step{step}")
    else:
        return
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"fault injected at {where}\n", encoding="utf-8")
    raise InjectedFault(f"injected fault at {where} (marker {path})")


def record_start(config: PipelineConfig, step: int) -> None:
    """Test hook: with `train.fault_marker` set, rank 0 appends the step each attempt starts from to FILE.starts."""
    global _attempt_start
    _attempt_start = step
    if config.train.fault_marker is not None and rank_and_world()[0] == 0:
        with open(f"{config.train.fault_marker}.starts", "a", encoding="utf-8") as f:
            f.write(f"{step}\n")


def record_batch(config: PipelineConfig, step: int, image_ids: list[int], loss: float, lr: float) -> None:
    """Test hook: with `train.fault_marker` set, every rank appends one JSON line per micro-batch to FILE.batches:
    the optimizer step (1-based) it belongs to, the attempt's start step, rank, world size, image ids, loss, lr and
    the time it was trained."""
    if config.train.fault_marker is None:
        return
    rank, world = rank_and_world()
    row = {"step": step, "attempt": _attempt_start, "rank": rank, "world": world, "ids": image_ids}
    with open(f"{config.train.fault_marker}.batches", "a", encoding="utf-8") as f:
        f.write(json.dumps({**row, "loss": loss, "lr": lr, "time": time.time()}) + "\n")
