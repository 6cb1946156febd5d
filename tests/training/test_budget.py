"""`train.minutes`: the plan's arithmetic (steps and evaluations that fit the time left), the plan made from timed
steps and re-made after evaluations, the learning rate following it, and a resumed run keeping it."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch
from tiny_run import without_auto

from pipeline.config import OptimConfig, TrainConfig, replace
from pipeline.training.budget import END_RESERVE_S, SKIP_STEPS, TIMED_STEPS, TimeBudget, plan_total_steps
from pipeline.training.loop import make_state
from pipeline.training.schedule import resolve_schedule, with_total
from pipeline.training.stream import Position
from pipeline.training.trainer import build_trainer

TRAIN = TrainConfig(epochs=None, minutes=3.0, eval_every=1)
OPTIM = OptimConfig(warmup_epochs=1)
LABEL_MAP = {"category_ids": [1, 2, 3], "names": ["circle", "square", "triangle"]}


@pytest.mark.parametrize(
    "seconds_left, step_s, period_end_s, done, expected",
    [
        (100, 1.0, 0.0, 0, 100),  # no evaluation cost: one step per second
        # evaluations after steps 10, 20, ... and at the end: T + 10 * ceil(T / 10) <= 100 -> T = 50 (51 needs 111)
        (100, 1.0, 10.0, 0, 50),
        # from step 20: (T - 20) + 10 * evaluations after 20 <= 100 -> T = 70 (50 steps, 5 evaluations: 30..70)
        (100, 1.0, 10.0, 20, 70),
        (3, 2.0, 10.0, 5, 6),  # no time left: at least one more step
    ],
)
def test_the_plan_is_the_longest_run_that_fits(seconds_left, step_s, period_end_s, done, expected):
    assert plan_total_steps(seconds_left, step_s, period_end_s, done, TRAIN, OPTIM, steps_per_epoch=10) == expected


def fake_trainer(step: int = 0):
    config = SimpleNamespace(train=TRAIN, optim=OPTIM)
    schedule = resolve_schedule(TRAIN, OPTIM, steps_per_epoch=10)  # provisional
    return SimpleNamespace(config=config, schedule=schedule, position=Position(step=step))


def test_the_first_plan_comes_from_the_timed_steps_and_each_evaluation_re_plans_it():
    # 8 val images per evaluation, 4 images per step: an evaluation is guessed at 8 / 4 * 0.5 + 2 = 3 step-seconds
    budget = TimeBudget(deadline=time.time() + 200 + END_RESERVE_S, val_images=8, images_per_step=4)
    trainer = fake_trainer()
    for step in range(1, SKIP_STEPS + TIMED_STEPS + 1):
        trainer.position = Position(step=step)
        line = budget.after_step(trainer, 5.0 if step <= SKIP_STEPS else 1.0)  # the first, slow steps are not timed
        assert (line is None) == (step < SKIP_STEPS + TIMED_STEPS)
    # 200 s - 3 s for the final evaluation = 197 s at step 10: (T - 10) + 3 * evaluations after 10 <= 197 -> T = 160
    # (150 steps and 15 evaluations: 195 s; 161 steps would need 151 + 48 = 199 s)
    assert trainer.schedule.total_steps == 160 and trainer.schedule.budget_plans == 1
    assert "-> 160 steps" in line
    assert budget.after_step(trainer, 1.0) is None  # planned once from the steps

    # the first evaluation: 10 steps in 10 + 20 s, of which the 2 untimed took 10 s: 8 steps in 20 s, 2.5 s per step
    line = budget.after_period(trainer, train_s=30.0, steps=10, period_end_s=3.0)
    assert "re-planned" in line and "(2.5 s per step" in line and trainer.schedule.budget_plans == 2
    assert trainer.schedule.total_steps < 110
    # the next period is fast again (its 10 steps all count): re-planned once more, longer
    trainer.position = Position(step=20)
    shorter = trainer.schedule.total_steps
    line = budget.after_period(trainer, train_s=10.0, steps=10, period_end_s=3.0)
    assert "(1 s per step" in line and trainer.schedule.total_steps > shorter and trainer.schedule.budget_plans == 3


def test_a_plan_confirmed_by_the_first_evaluation_is_kept():
    budget = TimeBudget(deadline=time.time() + 200 + END_RESERVE_S, val_images=8, images_per_step=4)
    trainer = fake_trainer(step=10)
    trainer.schedule = with_total(TRAIN, OPTIM, 10, 160, "planned", budget_plans=1)
    assert budget.after_period(trainer, train_s=10.0, steps=10, period_end_s=3.0) is None
    assert trainer.schedule.total_steps == 160 and trainer.schedule.budget_plans == 1


def test_the_learning_rate_follows_the_new_plan_without_a_jump(tiny_config):
    config = without_auto(replace(tiny_config, train={"epochs": None, "minutes": 3.0}, optim={"warmup_epochs": 0}))
    trainer = build_trainer(config, LABEL_MAP, resolve_schedule(config.train, config.optim, 10), torch.device("cpu"))
    for _ in range(5):
        trainer.optimizer.step()
        trainer.scheduler.step()
    before = trainer.optimizer.param_groups[0]["lr"]
    trainer.schedule = with_total(config.train, config.optim, 10, 30, "planned", budget_plans=1)  # shorter
    trainer.optimizer.step()
    trainer.scheduler.step()
    after = trainer.optimizer.param_groups[0]["lr"]
    assert after < before  # the cosine over 30 steps, from step 6: lower, no restart of the warm-up
    for _ in range(24):
        trainer.optimizer.step()
        trainer.scheduler.step()
    group = trainer.optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(group["initial_lr"] * config.optim.min_lr_ratio)  # the cosine's end at 30


def test_a_resumed_run_keeps_the_plan(tiny_config):
    config = without_auto(replace(tiny_config, train={"epochs": None, "minutes": 3.0}))
    provisional = resolve_schedule(config.train, config.optim, 10)
    trainer = build_trainer(config, LABEL_MAP, provisional, torch.device("cpu"))
    trainer.schedule = with_total(config.train, config.optim, 10, 77, "planned", budget_plans=2)
    state = make_state(trainer, {})
    resumed = build_trainer(config, LABEL_MAP, provisional, torch.device("cpu"), resume=state)
    assert resumed.schedule == trainer.schedule and resumed.schedule.total_steps == 77
