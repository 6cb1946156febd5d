"""The plain-PyTorch loop in one process (no Ray, no MLflow): NaN detection, accumulation, stop and resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.config import replace
from pipeline.training.loop import InjectedFault, build_trainer, fit, train_one_epoch
from pipeline.training.report import best_state, format_progress

LABEL_MAP = {"category_ids": [1, 2, 3], "names": ["circle", "square", "triangle"]}


def _batches(n: int, size: int = 128) -> list:
    target = {"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([1])}
    return [(torch.randn(2, 3, size, size), [target, target]) for _ in range(n)]


class _NanAtCall(nn.Module):
    """Wraps the training module; its loss turns NaN at the `bad_call`-th forward."""

    def __init__(self, inner: nn.Module, bad_call: int) -> None:
        super().__init__()
        self.inner, self.bad_call, self.calls = inner, bad_call, 0

    def forward(self, images, targets):
        self.calls += 1
        losses = self.inner(images, targets)
        if self.calls == self.bad_call:
            losses = {**losses, "loss": losses["loss"] * float("nan")}
        return losses


def test_nan_loss_raises_naming_epoch_and_step(tiny_config):
    trainer = build_trainer(tiny_config, LABEL_MAP, steps_per_epoch=3, device=torch.device("cpu"))
    trainer.train_module = _NanAtCall(trainer.train_module, bad_call=2)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at epoch 7, step 2/3"):
        train_one_epoch(trainer, _batches(3), epoch=7)


def test_gradient_accumulation_steps_the_optimizer_every_n_batches(tiny_config):
    config = replace(tiny_config, train={"grad_accum_steps": 2})
    trainer = build_trainer(config, LABEL_MAP, steps_per_epoch=5, device=torch.device("cpu"))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    metrics = train_one_epoch(trainer, _batches(5), epoch=1)
    assert trainer.scheduler.last_epoch == 3  # 5 batches, accumulate 2: steps after batches 2, 4 and the last
    assert trainer.ema.updates == 3
    assert metrics["train_images"] == 10
    changed = [
        k for k, v in trainer.model.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])
    ]
    assert changed, "the optimizer must have changed the weights"


def test_stopped_run_resumes_at_the_next_epoch(tiny_config, tmp_path):
    """A run that dies during epoch 2 continues there from its epoch-1 checkpoint, in a new process state."""
    config = replace(tiny_config, train={"epochs": 2, "fault_marker": str(tmp_path / "fault"), "fault_epoch": 2})
    seen: list[tuple[int, float]] = []

    def record(trainer, epoch, metrics):
        seen.append((epoch, trainer.scheduler.last_epoch))

    with pytest.raises(InjectedFault, match="epoch 2"):
        fit(config, tmp_path / "ckpt", on_epoch_end=record)
    assert [e for e, _ in seen] == [1]
    steps_per_epoch = seen[0][1]

    final = fit(config, tmp_path / "ckpt", resume=True, on_epoch_end=record)
    assert [e for e, _ in seen] == [1, 2]  # epoch 1 was not redone
    assert seen[1][1] == 2 * steps_per_epoch  # the schedule continued where it stopped
    assert final.epoch == 2 and "val_AP50" in final.metrics
    assert final.best["epoch"] in (1, 2)
    deployable = best_state(final)
    assert deployable.optimizer is None and set(deployable.model) == set(final.model)
    line = format_progress(2, 2, final.metrics, eta_s=75)
    assert line.startswith("epoch 2/2") and "AP50" in line and "img/s" in line and "ETA 1m15s" in line
