"""What follows an optimizer step (`after_step`): a checkpoint by steps or minutes, or for a graceful stop or a
preemption notice (rank 0's poll of those: tests/cluster/test_interrupts.py)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch

from pipeline.config import TrainConfig
from pipeline.training.cadence import AfterStep, after_step


def _trainer(step: int, **train) -> SimpleNamespace:
    return SimpleNamespace(
        config=SimpleNamespace(train=TrainConfig(**train)),
        position=SimpleNamespace(step=step),
        last_checkpoint=time.perf_counter(),
        device=torch.device("cpu"),
    )


def test_a_stop_or_a_notice_checkpoints_at_once_and_only_a_stop_stops():
    assert after_step(_trainer(6, checkpoint_every_steps=3)) == AfterStep("steps")
    assert not after_step(_trainer(7, checkpoint_every_steps=3)).checkpoint
    assert after_step(_trainer(7), lambda: None) == AfterStep("")
    assert after_step(_trainer(7), lambda: "stop") == AfterStep("stop", stop=True)
    assert after_step(_trainer(6, checkpoint_every_steps=3), lambda: "preemption") == AfterStep("preemption")
    late = _trainer(7, checkpoint_every_minutes=0.5)
    assert not after_step(late).checkpoint
    late.last_checkpoint -= 31  # [s] past the half minute
    assert after_step(late) == AfterStep("minutes")
