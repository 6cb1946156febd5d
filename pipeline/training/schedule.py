"""The run's length and rhythm in optimizer steps: total steps, warm-up, evaluation points.

A user gives `train.epochs`, `train.steps` or `train.minutes` (or none: the length is then chosen from the
dataset's size and the run header says why). With minutes, the length here is provisional: the run plans it from
its measured step rate (`pipeline.training.budget`) and replaces the schedule with `with_total`. Warm-up, the
cosine decay and the EMA follow optimizer steps; evaluation (with its report and checkpoint) comes every
`train.eval_every` epochs or steps, and always at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.config import ConfigError, OptimConfig, TrainConfig
from pipeline.config.checks import parse_eval_every

AUTO_EPOCHS = 8  # fine-tuning from an ImageNet backbone: 8 passes (the demo reaches val AP 0.5 in 8, README)
MIN_STEPS = 300  # fewer optimizer steps than this learn little, however small the dataset
MAX_EPOCHS = 200  # more passes over a tiny dataset only memorise it
AUTO_EVALUATIONS = 6  # `eval_every: auto`: about this many evaluations per run, at whole epochs when epochs are short


@dataclass(frozen=True)
class Schedule:
    """Optimizer steps of one run (global: every rank takes the same steps)."""

    total_steps: int
    steps_per_epoch: int  # optimizer steps per pass over the training set
    warmup_steps: int
    eval_period: int  # evaluate (report, checkpoint) every this many steps, and at total_steps
    length_reason: str  # how the length was chosen, for the run header
    budget_plans: int = 0  # train.minutes: 0 = provisional, then how often planned from the measured rate

    @property
    def epochs(self) -> float:
        return self.total_steps / self.steps_per_epoch

    def period_end(self, step: int) -> int:
        """The first evaluation point after optimizer step `step` (the end of the period `step` is in)."""
        return min(self.total_steps, (step // self.eval_period + 1) * self.eval_period)

    def as_dict(self) -> dict[str, int | str]:
        return dict(vars(self))

    def eval_points(self) -> list[int]:
        """The steps after which the run evaluates, reports and checkpoints."""
        points = list(range(self.eval_period, self.total_steps, self.eval_period))
        return [*points, self.total_steps]

    def describe(self) -> str:
        return (
            f"{self.total_steps} steps ({self.epochs:.3g} epochs of {self.steps_per_epoch} steps), warm-up "
            f"{self.warmup_steps} steps, evaluation every {self.eval_period} steps: {self.length_reason}"
        )


def steps_per_epoch(num_train_images: int, batch_size: int, world_size: int, grad_accum_steps: int) -> int:
    """Optimizer steps per epoch: ceil(images / global batch), the global batch being batch x world (an elastic
    run's largest) x `grad_accum_steps`; the sampler pads the last step with the epoch's first images."""
    if num_train_images < 1:
        raise ConfigError("the training split has no images")
    return math.ceil(num_train_images / (batch_size * world_size * grad_accum_steps))


def optimizer_steps(batches: int, grad_accum_steps: int) -> int:
    """Optimizer steps of an epoch of `batches` batches per rank: ceil, the last step may accumulate fewer."""
    return math.ceil(batches / grad_accum_steps)


def resolve_schedule(train: TrainConfig, optim: OptimConfig, steps_per_epoch: int) -> Schedule:
    """The schedule of a run whose epochs take `steps_per_epoch` optimizer steps."""
    total, reason = _length(train, steps_per_epoch)
    return with_total(train, optim, steps_per_epoch, total, reason)


def with_total(
    train: TrainConfig, optim: OptimConfig, steps_per_epoch: int, total: int, reason: str, budget_plans: int = 0
) -> Schedule:
    """The schedule of `total` optimizer steps: warm-up and evaluation period follow from the config. Under a time
    budget the warm-up is at most a quarter of the run (a short budget must not spend itself warming up)."""
    warmup = min(total - 1, round(optim.warmup_epochs * steps_per_epoch))
    if optim.warmup_steps is not None:
        warmup = min(total - 1, optim.warmup_steps)
    if train.minutes is not None:
        warmup = min(warmup, total // 4)
    period = _eval_period(train.eval_every, steps_per_epoch, total)
    return Schedule(total, steps_per_epoch, max(0, warmup), period, reason, budget_plans)


def _length(train: TrainConfig, steps_per_epoch: int) -> tuple[int, str]:
    if train.steps is not None:
        return train.steps, "train.steps"
    if train.epochs is not None:
        return train.epochs * steps_per_epoch, "train.epochs"
    if train.minutes is not None:
        return max(MIN_STEPS, AUTO_EPOCHS * steps_per_epoch), (
            f"provisional: train.minutes={train.minutes:g} plans the length from the step rate of the first steps"
        )
    by_epochs = AUTO_EPOCHS * steps_per_epoch
    if by_epochs >= MIN_STEPS:
        return by_epochs, f"chosen: {AUTO_EPOCHS} epochs (set train.epochs or train.steps to change it)"
    steps = min(MIN_STEPS, MAX_EPOCHS * steps_per_epoch)
    return steps, (
        f"chosen: a small dataset ({steps_per_epoch} steps per epoch) gets at least {MIN_STEPS} steps and at most "
        f"{MAX_EPOCHS} epochs, instead of {AUTO_EPOCHS} epochs ({by_epochs} steps); set train.epochs or train.steps "
        "to change it"
    )


def _eval_period(eval_every: str, steps_per_epoch: int, total: int) -> int:
    parsed = parse_eval_every(eval_every)
    if parsed is None:  # auto: about AUTO_EVALUATIONS evaluations, at the ends of epochs unless epochs are long
        period = max(1, math.ceil(total / AUTO_EVALUATIONS))
        if steps_per_epoch <= 2 * period:
            period = max(1, round(period / steps_per_epoch)) * steps_per_epoch
        return min(period, total)
    count, unit = parsed
    return min(total, count * steps_per_epoch if unit == "epochs" else count)
