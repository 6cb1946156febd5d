"""Unit tests of the loop's parts: checkpoints (and refusing pickled code), optimizer groups, schedule, EMA."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

from pipeline.config import OptimConfig, TrainConfig
from pipeline.training.checkpoint import BestEval, CheckpointError, TrainState, load_checkpoint, save_checkpoint
from pipeline.training.ema import ModelEma
from pipeline.training.optim import build_optimizer, build_scheduler, clip_gradients, param_groups
from pipeline.training.schedule import resolve_schedule


def _small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


def _state(**extra) -> TrainState:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    return TrainState(
        epoch=3,
        model=net.state_dict(),
        config={"train": {"epochs": 5}},
        label_map={"category_ids": [1, 2], "names": ["a", "b"]},
        metrics={"val_AP": 0.5},
        **extra,
    )


def test_checkpoint_round_trip(tmp_path):
    best = BestEval(step=8, epoch=2.0, value=0.4, metrics={"val_AP": 0.4}, weights={"w": torch.ones(2)})
    state = _state(best=best)
    save_checkpoint(state, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.epoch == 3 and loaded.metrics == {"val_AP": 0.5}
    assert loaded.label_map == state.label_map
    for key, value in state.model.items():
        assert torch.equal(loaded.model[key], value)
    assert (loaded.best.step, loaded.best.epoch, loaded.best.value, loaded.best.metric) == (8, 2.0, 0.4, "val_AP")
    assert torch.equal(loaded.best.weights["w"], torch.ones(2))
    assert loaded.chosen("best").metrics == {"val_AP": 0.4} and loaded.chosen("last").metrics == {"val_AP": 0.5}


class _Payload:
    """An object whose unpickling runs a shell command: what a malicious checkpoint would carry."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    state = _state()
    payload = {"format_version": 1, **state.__dict__, "config": _Payload(str(marker))}
    (tmp_path / "evil").mkdir()
    torch.save(payload, tmp_path / "evil" / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="refusing to load .*evil/checkpoint.pt.*pickled"):
        load_checkpoint(tmp_path / "evil")
    assert not marker.exists(), "the pickled code must never run"


def test_not_a_checkpoint_is_refused_with_the_file_named(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="tensor.pt is not a training checkpoint"):
        load_checkpoint(tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nothing")


def test_weight_decay_only_on_weights():
    net = _small_net()
    net(torch.zeros(1, 3, 5, 5))  # materialise the lazy layer
    decay, no_decay = param_groups(net, 1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    for name, param in net.named_parameters():
        is_weight = name.endswith("weight") and not isinstance(net[int(name.split(".")[0])], nn.BatchNorm2d)
        assert (id(param) in decayed) == is_weight, name


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_warmup_then_cosine(name):
    cfg = OptimConfig(name=name, lr=0.1, warmup_epochs=1, warmup_start_factor=0.1, min_lr_ratio=0.01)
    net = _small_net()
    net(torch.zeros(1, 3, 5, 5))
    opt = build_optimizer(net, cfg, lr=0.1)
    schedule = resolve_schedule(TrainConfig(epochs=5), cfg, steps_per_epoch=10)
    sched = build_scheduler(opt, cfg, lambda: schedule)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01)  # warmup starts at start_factor * lr
    assert max(lrs) == pytest.approx(0.1) and lrs.index(max(lrs)) == 10  # peak right after one epoch
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:11], strict=True))  # rising during warmup
    assert all(a >= b for a, b in zip(lrs[10:-1], lrs[11:], strict=True))  # falling after
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.01)  # ends at min_lr_ratio


def test_gradient_clipping_bounds_the_norm():
    net = nn.Linear(4, 4)
    (net(torch.ones(2, 4)) * 1000).sum().backward()
    before = clip_gradients(net, 1.0)
    after = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in net.parameters()))
    assert before > 10 and after == pytest.approx(1.0, rel=1e-4)
    assert clip_gradients(net, None) is None


def test_ema_follows_weights_and_round_trips():
    net = nn.Linear(2, 1, bias=False)
    nn.init.zeros_(net.weight)
    ema = ModelEma(net, decay=0.5, warmup=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net)
    ema.update(net)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 0.75))  # 0 -> 0.5 -> 0.75
    other = ModelEma(nn.Linear(2, 1, bias=False), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 2 and torch.equal(other.module.weight, ema.module.weight)
    assert ModelEma(net, 0.9998, warmup=True).current_decay() == pytest.approx(0.1)  # early updates move fast


def test_the_run_header_names_the_ray_it_will_use(tiny_config, monkeypatch):
    """`ray.address`, else RAY_ADDRESS (where `init_ray` connects), else a Ray started locally."""
    import dataclasses

    from pipeline.config import replace
    from pipeline.plan.header import header_lines
    from pipeline.plan.job import resolve_job

    job = resolve_job(tiny_config)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert " on a local Ray; " in "\n".join(header_lines(job))
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.7:6379")
    assert " on RAY_ADDRESS=10.0.0.7:6379; " in "\n".join(header_lines(job))
    named = dataclasses.replace(job, config=replace(tiny_config, ray={"address": "ray://head:10001"}))
    assert " on ray://head:10001; " in "\n".join(header_lines(named))


def test_an_elastic_header_keeps_the_largest_global_batch_and_warns_of_a_small_failure_budget(tiny_config):
    from pipeline.config import replace
    from pipeline.plan.header import header_lines
    from pipeline.plan.job import resolve_job

    job = resolve_job(replace(tiny_config, ray={"num_workers": [1, 2], "max_failures": 1}))
    header = "\n".join(header_lines(job))
    assert "global batch of 8 (2 workers x 4)" in header and "ray: 1-2 (elastic) workers" in header
    assert "by world size 1: 2, 2: 1" in header  # 1 worker accumulates 2 micro-batches of 4
    assert "warning: elastic with ray.max_failures=1" in header
    assert job.schedule.steps_per_epoch == 2  # 16 images / global batch 8, at either size
    roomy = resolve_job(replace(tiny_config, ray={"num_workers": [1, 2], "max_failures": -1}))
    assert not any("max_failures" in note for note in roomy.notes)


def test_the_run_header_says_each_fitted_value_and_why_beside_the_anchors(tiny_config):
    from pipeline.config import replace
    from pipeline.plan.header import header_lines
    from pipeline.plan.job import resolve_job

    lines = header_lines(resolve_job(replace(tiny_config, model={"image_size": "auto"})))
    fitted = [line for line in lines if line.startswith("auto: ")]
    keys = [line.split("=")[0].removeprefix("auto: ") for line in fitted]
    assert {"model.image_size", "model.min_level", "model.max_level", "data.augment"} <= set(keys), lines
    assert all(": " in line.removeprefix("auto: ") for line in fitted)  # each with its reason
    first = lines.index(fitted[0])
    assert lines[first - 1].startswith("anchors: ") and lines[first + len(fitted)].startswith("schedule: ")
    pinned = header_lines(resolve_job(replace(tiny_config, model={"min_level": 3}, data={"augment": "default"})))
    assert not any(
        line.startswith(("auto: model.image_size", "auto: model.min_level", "auto: data.augment")) for line in pinned
    )
