"""`train.minutes`: a run that ends within a time budget, its length planned from its own measured speed.

The budget counts from the job's start (the driver process, or a search trial's workers) to its end. The schedule
the run starts with is provisional; after SKIP_STEPS + TIMED_STEPS optimizer steps (inside the warm-up, before the
cosine decay has begun) rank 0 times the steps, estimates what each evaluation period's end costs, and sets the
step count so that the steps left, every evaluation and the run's end (the best checkpoint's final evaluation and
END_RESERVE_S of logging and shutdown) fit in the time left.
After every evaluation the plan is checked against the period just measured (its steps' rate, the untimed first
steps left out, and the evaluation's real cost) and re-planned when it moves by more than REPLAN_CHANGE: the first
steps of a run are often slower than the rest (loader workers starting, a Ray cluster still settling on the same
cores: on 2 CPUs twice as slow), and a plan kept from them would end the run with a third of its budget unused.
Every rank takes rank 0's plan (an all-reduce), so DDP ranks stay in step.

The learning rate follows the planned schedule from the step it is made (the scheduler reads the trainer's
schedule at every step), and the EMA's decay ramp counts updates, not the planned total: neither jumps. The plan
is saved in every checkpoint, and a resumed run keeps it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pipeline.config import OptimConfig, TrainConfig
from pipeline.training.distributed import all_reduce_max, rank_and_world
from pipeline.training.schedule import with_total

SKIP_STEPS = 2  # not timed: first-step costs (allocations, autotuning, loader start-up)
TIMED_STEPS = 8  # timed before the first plan
REPLAN_CHANGE = 0.05  # re-plan after an evaluation when the plan moves by more than this share
EVAL_TO_TRAIN = 0.5  # before any evaluation: an evaluated image is guessed to cost half a trained one
PERIOD_END_S = 2.0  # ... plus this per evaluation (report, checkpoint), until measured
# the run's end after the last evaluation, besides re-evaluating the best checkpoint: the driver logs it, the plots
# and the summary to MLflow and shuts Ray down
END_RESERVE_S = 12.0


def plan_total_steps(
    seconds_left: float,
    step_s: float,
    period_end_s: float,
    done: int,
    train: TrainConfig,
    optim: OptimConfig,
    steps_per_epoch: int,
) -> int:
    """The most optimizer steps (at least `done + 1`) whose remaining steps (`step_s` each) and remaining
    evaluation periods' ends (`period_end_s` each: evaluation, report, checkpoint) fit in `seconds_left`."""
    low, high = done + 1, done + max(1, int(seconds_left / step_s))  # needed() grows with the length: bisect
    while low < high:
        middle = (low + high + 1) // 2
        if _needed(middle, step_s, period_end_s, done, train, optim, steps_per_epoch) <= seconds_left:
            low = middle
        else:
            high = middle - 1
    return low


def _evaluations_after(total: int, done: int, train: TrainConfig, optim: OptimConfig, per_epoch: int) -> int:
    return sum(1 for point in with_total(train, optim, per_epoch, total, "").eval_points() if point > done)


def _needed(total, step_s, period_end_s, done, train, optim, per_epoch) -> float:
    return (total - done) * step_s + _evaluations_after(total, done, train, optim, per_epoch) * period_end_s


@dataclass
class TimeBudget:
    """Plans the trainer's schedule from the measured step rate (see the module's docstring)."""

    deadline: float  # time.time() by which the run must have ended
    val_images: int  # evaluated per evaluation (all ranks)
    images_per_step: int  # trained per optimizer step (all ranks)
    first_step: int = 0  # the step this process started from
    _timed: list[float] = field(default_factory=list, repr=False)
    _untimed: list[float] = field(default_factory=list, repr=False)  # the first steps' seconds (not yet discounted)

    def after_step(self, trainer, seconds: float) -> str | None:
        """After every optimizer step (which took `seconds`, its loader wait included, evaluations not): the first
        plan, once the steps are timed; its line (rank 0) or None."""
        if trainer.schedule.budget_plans:
            return None
        if trainer.position.step - self.first_step > SKIP_STEPS:
            self._timed.append(seconds)
        else:
            self._untimed.append(seconds)
        if len(self._timed) < TIMED_STEPS:
            return None
        step_s = all_reduce_max(sum(self._timed) / len(self._timed))
        period_end_s = self.val_images * step_s / self.images_per_step * EVAL_TO_TRAIN + PERIOD_END_S
        return self._plan(trainer, step_s, period_end_s, "timed over the first steps")

    def after_period(self, trainer, train_s: float, steps: int, period_end_s: float) -> str | None:
        """After an evaluation period (`steps` steps in `train_s`, its end in `period_end_s`): the plan checked with
        this period's costs, re-planned if it moved; its line (rank 0) or None. The first steps, slow with start-up
        costs, are left out of the rate (once: they belong to the first period)."""
        if self._untimed and steps > len(self._untimed):
            train_s, steps = train_s - sum(self._untimed), steps - len(self._untimed)
        self._untimed = []  # in this period, and only in it
        if not trainer.schedule.budget_plans or steps < 1:
            return None
        step_s, period_end_s = all_reduce_max(train_s / steps), all_reduce_max(period_end_s)
        return self._plan(trainer, step_s, period_end_s, "re-planned after an evaluation")

    def _plan(self, trainer, step_s: float, period_end_s: float, how: str) -> str | None:
        cfg, old = trainer.config, trainer.schedule
        # the end: the best checkpoint evaluated once more (about one period's end), its logging, Ray's shutdown
        left = self.deadline - time.time() - END_RESERVE_S - period_end_s
        done = trainer.position.step
        total = plan_total_steps(left, step_s, period_end_s, done, cfg.train, cfg.optim, old.steps_per_epoch)
        rank = rank_and_world()[0]
        total = int(all_reduce_max(float(total) if rank == 0 else 0.0))  # rank 0's clock and plan for all
        moved = abs(total - old.total_steps) / old.total_steps > REPLAN_CHANGE
        if old.budget_plans and not moved:
            return None  # checked: the plan holds
        plans = old.budget_plans + 1
        reason = (
            f"train.minutes={cfg.train.minutes:g}: {how} ({step_s:.3g} s per step, {period_end_s:.3g} s per "
            f"evaluation, {max(0.0, left):.0f} s left at step {done})"
        )
        trainer.schedule = with_total(cfg.train, cfg.optim, old.steps_per_epoch, total, reason, plans)
        return f"time budget: {old.total_steps} -> {total} steps; {reason}" if rank == 0 else None


def make_budget(
    config, deadline: float | None, val_images: int, images_per_step: int, first_step: int
) -> TimeBudget | None:
    """The run's budget when `train.minutes` is set: until `deadline` (time.time()), else from now; a step trains
    `images_per_step` images (the global batch)."""
    minutes = config.train.minutes
    if minutes is None:
        return None
    end = deadline if deadline is not None else time.time() + 60 * minutes
    return TimeBudget(end, val_images, images_per_step, first_step)
