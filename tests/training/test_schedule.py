"""The schedule in optimizer steps: the run's length (given in epochs or steps, or chosen from the dataset's size),
warm-up and cosine by step, evaluation points in either unit, and the learning-rate scaling rule."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.config import ConfigError, OptimConfig, TrainConfig, load_config
from pipeline.training.optim import build_optimizer, build_scheduler, scaled_lr
from pipeline.training.schedule import AUTO_EPOCHS, MAX_EPOCHS, MIN_STEPS, resolve_schedule, steps_per_epoch


def test_length_in_epochs_or_steps():
    optim = OptimConfig(warmup_epochs=1.0)
    by_epochs = resolve_schedule(TrainConfig(epochs=3), optim, steps_per_epoch=40)
    assert (by_epochs.total_steps, by_epochs.warmup_steps, by_epochs.epochs) == (120, 40, 3.0)
    by_steps = resolve_schedule(TrainConfig(steps=100), optim, steps_per_epoch=40)
    assert (by_steps.total_steps, by_steps.epochs) == (100, 2.5)
    assert by_steps.eval_points()[-1] == 100  # the end is always evaluated, even mid-epoch
    warm = resolve_schedule(TrainConfig(steps=100), OptimConfig(warmup_steps=25), steps_per_epoch=40)
    assert warm.warmup_steps == 25


def test_unset_length_is_chosen_from_the_dataset_size_and_said():
    forty_images = steps_per_epoch(40, batch_size=4, world_size=2, grad_accum_steps=1)
    assert forty_images == 5
    small = resolve_schedule(TrainConfig(), OptimConfig(), forty_images)
    assert small.total_steps == MIN_STEPS and small.epochs == MIN_STEPS / 5
    assert f"at least {MIN_STEPS} steps" in small.length_reason and "train.epochs or train.steps" in small.length_reason
    large = resolve_schedule(TrainConfig(), OptimConfig(), steps_per_epoch=1000)
    assert large.total_steps == AUTO_EPOCHS * 1000 and f"{AUTO_EPOCHS} epochs" in large.length_reason
    tiny = resolve_schedule(TrainConfig(), OptimConfig(), steps_per_epoch=1)  # one batch of images
    assert MAX_EPOCHS < MIN_STEPS and tiny.total_steps == MAX_EPOCHS  # never more than MAX_EPOCHS passes


@pytest.mark.parametrize(
    ("eval_every", "expected"),
    [
        ("2", [80, 160, 200]),  # a bare number counts epochs
        ("2 epochs", [80, 160, 200]),
        ("1 epoch", [40, 80, 120, 160, 200]),
        ("75 steps", [75, 150, 200]),
        ("auto", [40, 80, 120, 160, 200]),  # about 6 evaluations, at whole epochs
    ],
)
def test_evaluation_points_in_either_unit(eval_every, expected):
    schedule = resolve_schedule(TrainConfig(steps=200, eval_every=eval_every), OptimConfig(), steps_per_epoch=40)
    assert schedule.eval_points() == expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.epochs=3", "train.steps=100"], "give one of train.epochs, train.steps or train.minutes"),
        (["train.eval_every=3 weeks"], "train.eval_every='3 weeks'"),
        (["train.eval_every=0"], "train.eval_every='0'"),
        (["train.steps=0"], "train.steps=0"),
        (["optim.lr_scaling=cubic"], "optim.lr_scaling='cubic'"),
    ],
)
def test_bad_schedule_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_warmup_and_cosine_follow_optimizer_steps():
    optim = OptimConfig(lr=0.1, warmup_steps=10, warmup_start_factor=0.1, min_lr_ratio=0.01)
    schedule = resolve_schedule(TrainConfig(steps=50), optim, steps_per_epoch=7)  # epochs of 7 steps do not matter
    net = torch.nn.Linear(2, 2)
    opt = build_optimizer(net, optim, lr=0.1)
    sched = build_scheduler(opt, optim, lambda: schedule)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and lrs.index(max(lrs)) == 10 and max(lrs) == pytest.approx(0.1)
    assert lrs[30] == pytest.approx(0.001 + 0.099 * 0.5 * (1 + math.cos(math.pi * 20 / 40)))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001)  # min_lr_ratio at the last step


def test_learning_rate_scales_with_the_square_root_of_the_batch_by_default():
    optim = OptimConfig(lr=0.64, lr_reference_batch=64)
    assert scaled_lr(optim, 16) == pytest.approx(0.32) and scaled_lr(optim, 256) == pytest.approx(1.28)
    linear = OptimConfig(lr=0.64, lr_reference_batch=64, lr_scaling="linear")
    assert scaled_lr(linear, 16) == pytest.approx(0.16)
