"""The plain-PyTorch training loop: one process, or one rank of a DDP group set up by someone else.

The run is a number of optimizer steps (`pipeline.training.schedule`), cut into evaluation periods; after each
period the loop evaluates and calls `on_period_end`. Nothing here imports Ray or MLflow. The Ray adapter
(`pipeline.cluster.train`) wraps the model and the loaders and passes an `on_period_end` that reports and
checkpoints; `fit` runs the same loop in a single process with local checkpoints (the fastest way to test and
debug it).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pipeline.config import PipelineConfig, to_dict
from pipeline.data.analyze import fit_auto
from pipeline.training.budget import make_budget
from pipeline.training.cadence import Interrupts, after_step, progress_snapshot
from pipeline.training.checkpoint import BestEval, TrainState, load_checkpoint, save_checkpoint
from pipeline.training.device import apply_backend_flags, device_settings, worker_cpus
from pipeline.training.distributed import all_reduce_max, all_reduce_sum, rank_and_world
from pipeline.training.evaluate import evaluate
from pipeline.training.faults import maybe_inject_fault, record_batch
from pipeline.training.inputs import build_loaders, ensure_dataset, schedule_for
from pipeline.training.optim import clip_gradients
from pipeline.training.progress import format_step_progress
from pipeline.training.schedule import optimizer_steps
from pipeline.training.stream import BatchStream, Position
from pipeline.training.trainer import Trainer, build_trainer

BEST_METRIC = "val_AP"


class StopRequested(Exception):
    """Every rank stops here after a checkpoint (a graceful stop was requested); `step` is where it was taken."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped on request after step {step}, its checkpoint saved")
        self.step = step


def _to_device(
    images: torch.Tensor, targets: list[dict], device: torch.device, channels_last: bool = False
) -> tuple[torch.Tensor, list[dict]]:
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    moved = [
        {"boxes": t["boxes"].to(device, non_blocking=True), "labels": t["labels"].to(device, non_blocking=True)}
        for t in targets
    ]
    return images, moved


def _optimizer_step(trainer: Trainer) -> None:
    trainer.scaler.unscale_(trainer.optimizer)  # clip the true gradients, not the fp16-scaled ones
    clip_gradients(trainer.model, trainer.config.optim.clip_grad_norm)
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.scheduler.step()
    if trainer.ema is not None:
        trainer.ema.update(trainer.model)


ProgressCallback = Callable[["Trainer", dict[str, float]], None]
CheckpointCallback = Callable[["Trainer", str], None]  # (trainer, why: AfterStep.reason)


def train_steps(
    trainer: Trainer,
    stream: BatchStream,
    num_steps: int,
    on_progress: ProgressCallback | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    interrupts: Interrupts | None = None,
    end_step: Callable[[], int] | None = None,
) -> dict[str, float]:
    """`num_steps` optimizer steps from `stream` (or, with `end_step`, steps until the step it returns, asked again
    after each: a time budget may move the period's end); returns metrics averaged over all ranks' images. On rank 0,
    `on_progress(trainer, snapshot)` runs after a step at most every `train.log_every_seconds`; on every rank,
    `on_checkpoint(trainer, reason)` after a step where `after_step` says so (not after the last: the period's end
    saves), then `StopRequested` if it was a requested stop (`interrupts`: rank 0's poll, see `after_step`)."""
    trainer.train_module.train()
    sums = torch.zeros(4, dtype=torch.float64)  # loss, class_loss, box_loss (image-weighted), images
    start, waited = time.perf_counter(), 0.0
    first_step = trainer.position.step
    interval = trainer.config.train.log_every_seconds
    report_progress = on_progress is not None and interval is not None and rank_and_world()[0] == 0
    trainer.last_progress = trainer.last_progress or start
    trainer.last_checkpoint = trainer.last_checkpoint or start

    def more() -> bool:  # inside the period (`end_step`), or fewer than `num_steps` taken
        return trainer.position.step < end_step() if end_step else taken < num_steps

    taken = 0
    while more():
        before = time.perf_counter()
        batches = stream.next_step()  # the loader's wait: what a starved GPU (or CPU) spends idle
        waited += time.perf_counter() - before
        for index, (images, batch_targets) in enumerate(batches):
            images, targets = _to_device(images, batch_targets, trainer.device, trainer.settings.channels_last)
            # under DDP, skip the gradient all-reduce on accumulation micro-steps (forward and backward both inside)
            no_sync = getattr(trainer.train_module, "no_sync", None)
            last = index == len(batches) - 1
            with no_sync() if no_sync is not None and not last else contextlib.nullcontext():
                with trainer.settings.autocast():
                    losses = trainer.train_module(images, targets)
                loss = losses["loss"]
                parts = torch.stack([loss.detach(), losses["class_loss"].detach(), losses["box_loss"].detach()])
                parts = parts.double().cpu()  # one device sync per micro-step
                if not torch.isfinite(parts).all():
                    detail = dict(zip(("loss", "class_loss", "box_loss"), parts.tolist(), strict=True))
                    raise FloatingPointError(
                        f"non-finite loss at step {stream.position.step} (epoch {stream.position.epoch + 1}, "
                        f"batch {stream.position.batch}): {detail}"
                    )
                trainer.scaler.scale(loss * stream.loss_weight(len(batches))).backward()
            if trainer.config.train.fault_marker is not None:  # the test hook's trace; nothing on the hot path else
                ids = [int(t["image_id"]) for t in batch_targets if "image_id" in t]
                lr = trainer.optimizer.param_groups[0]["lr"]
                record_batch(trainer.config, stream.position.step, ids, float(parts[0]), lr)
            n = images.shape[0]
            sums += torch.cat([parts * n, torch.tensor([n], dtype=torch.float64)])
        _optimizer_step(trainer)
        taken += 1
        trainer.position = Position(**stream.position.as_dict())
        if report_progress and time.perf_counter() - trainer.last_progress >= interval:
            trainer.last_progress = time.perf_counter()
            on_progress(trainer, progress_snapshot(trainer, sums, first_step, start, waited, rank_share(stream)))
        if trainer.budget is not None and (line := trainer.budget.after_step(trainer, time.perf_counter() - before)):
            print(line, flush=True)
        maybe_inject_fault(trainer.config, step=trainer.position.step)
        after = after_step(trainer, interrupts)
        if after.checkpoint and on_checkpoint is not None and more():
            on_checkpoint(trainer, after.reason)
            trainer.last_checkpoint = time.perf_counter()
            if after.stop:
                raise StopRequested(trainer.position.step)
        trainer.stop_after_period |= after.stop  # on the period's last step: stop once its end has checkpointed
    seconds = time.perf_counter() - start
    wait_share = waited / max(seconds, 1e-9)  # this rank's; each step's device work is synchronised (loss .cpu())
    all_reduce_sum(sums)
    seconds = all_reduce_max(seconds)  # the period lasts as long as the slowest rank
    wait_share_max = all_reduce_max(wait_share)  # the most starved rank
    images_total = max(1.0, float(sums[3]))
    memory = (
        {"gpu_memory_peak_gb": torch.cuda.max_memory_allocated(trainer.device) / 2**30}
        if trainer.device.type == "cuda"
        else {}
    )
    return {
        "train_loss": float(sums[0]) / images_total,
        "train_class_loss": float(sums[1]) / images_total,
        "train_box_loss": float(sums[2]) / images_total,
        "lr": trainer.optimizer.param_groups[0]["lr"],
        "train_images": images_total,  # over all ranks: shows every shard was trained on
        "images_per_s": images_total / max(seconds, 1e-9),
        "train_time_s": seconds,
        "train_steps": taken,
        "data_wait_share": wait_share_max,  # of the period's wall time, on the rank that waited most
        **memory,
    }


def update_best(trainer: Trainer, metrics: dict[str, float]) -> bool:
    """Keep a CPU copy of the eval weights of the best evaluation so far (by val AP); True when this one is best."""
    value = metrics.get(BEST_METRIC)
    if value is None or (trainer.best is not None and value <= trainer.best.value):
        return False
    weights = {k: v.detach().cpu().clone() for k, v in trainer.eval_model().state_dict().items()}
    trainer.best = BestEval(
        step=trainer.position.step,
        epoch=metrics["epoch"],
        value=float(value),
        metrics=dict(metrics),
        weights=weights,
        metric=BEST_METRIC,
    )
    return True


def step_metrics(trainer: Trainer) -> dict[str, float]:
    """What a checkpoint between evaluations records: where it stands (no evaluation was run)."""
    step = trainer.position.step
    return {"step": step, "epoch": round(step / trainer.schedule.steps_per_epoch, 4)}


def make_state(trainer: Trainer, metrics: dict[str, float]) -> TrainState:
    """The checkpoint of where training stands now."""
    return TrainState(
        epoch=trainer.position.epoch,
        model=trainer.model.state_dict(),
        config=to_dict(trainer.config),
        label_map=trainer.label_map,
        ema=trainer.ema.state_dict() if trainer.ema is not None else None,
        optimizer=trainer.optimizer.state_dict(),
        scheduler=trainer.scheduler.state_dict(),
        scaler=trainer.scaler.state_dict(),
        metrics=dict(metrics),
        best=trainer.best,
        position=trainer.position.as_dict(),
        schedule=trainer.schedule.as_dict(),
        world=trainer.world_history.as_dict() if trainer.world_history is not None else None,
    )


PeriodCallback = Callable[[Trainer, dict[str, float]], None]


def run_schedule(
    trainer: Trainer,
    train_loader,
    val_loader,
    coco_gt,
    on_period_end: PeriodCallback,
    on_progress: ProgressCallback | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    interrupts: Interrupts | None = None,
    deadline: float | None = None,
) -> dict[str, float]:
    """Train from `trainer.position` to the end of its schedule (`train.minutes`: planned to end by `deadline`,
    a time.time(); default: the budget counts from now); after each evaluation period: evaluate, then
    `on_period_end(trainer, metrics)` (metrics hold `step`, `epoch` = steps / steps per epoch, losses, COCO);
    inside periods, `on_progress`, `on_checkpoint` and `interrupts` as `train_steps` says. Raises `StopRequested`
    after the checkpoint of a requested stop."""
    stream = BatchStream(
        train_loader,
        trainer.config.train.grad_accum_steps,
        trainer.position,
        on_epoch_start=lambda epoch: maybe_inject_fault(trainer.config, epoch=epoch + 1),
    )
    assert stream.batches_per_epoch and (
        optimizer_steps(stream.batches_per_epoch, stream.accum) == trainer.schedule.steps_per_epoch
    ), "the loader and the schedule disagree on the steps per epoch"
    trainer.budget = make_budget(
        trainer.config, deadline, len(val_loader.dataset), global_batch(stream), trainer.position.step
    )
    metrics: dict[str, float] = {}
    while trainer.position.step < trainer.schedule.total_steps:
        started = trainer.position.step
        metrics = train_steps(
            trainer,
            stream,
            0,
            on_progress,
            on_checkpoint,
            interrupts,
            end_step=lambda started=started: trainer.schedule.period_end(started),
        )
        point = trainer.position.step
        metrics = {"step": point, "epoch": round(point / trainer.schedule.steps_per_epoch, 4), **metrics}
        start = time.perf_counter()
        postprocess = trainer.config.eval.postprocess()
        metrics.update(
            evaluate(trainer.eval_model(), val_loader, coco_gt, trainer.label_map, trainer.device, None, postprocess)
        )
        metrics["eval_time_s"] = time.perf_counter() - start
        update_best(trainer, metrics)
        if trainer.stop_after_period and point < trainer.schedule.total_steps:
            metrics["stopped_at_step"] = point  # this period's checkpoint is the stop's
        on_period_end(trainer, metrics)
        if "stopped_at_step" in metrics:
            raise StopRequested(point)
        if trainer.budget is not None:  # this period's real costs (steps; evaluation, report, checkpoint)
            line = trainer.budget.after_period(
                trainer, metrics["train_time_s"], int(metrics["train_steps"]), time.perf_counter() - start
            )
            if line:
                print(line, flush=True)
        # the period's end printed its line and checkpointed: both intervals start again from here
        trainer.last_progress = trainer.last_checkpoint = time.perf_counter()
    return metrics


def rank_share(stream: BatchStream) -> float:
    """The part of each step's images this rank trains: its micro-batches of the step's (an elastic run below
    its largest size gives the first ranks one more), or 1 / world with a test's plain loader."""
    if stream.layout is not None:
        return stream.layout.batches_per_step / stream.layout.chunks
    return 1.0 / rank_and_world()[1]


def global_batch(stream: BatchStream) -> int:
    """Images per optimizer step over all ranks: the sampler's layout says it (a test's plain loader: its batches
    times the accumulation on every rank)."""
    if stream.layout is not None:
        return stream.layout.global_batch
    return stream.loader.batch_size * stream.accum * rank_and_world()[1]


def fit(
    config: PipelineConfig,
    checkpoint_dir: str | Path,
    resume: bool = False,
    on_period_end: PeriodCallback | None = None,
) -> TrainState:
    """Train in this one process; the state after every evaluation period is saved to `checkpoint_dir/last`.

    With `resume`, training continues from the position saved there.
    """
    torch.manual_seed(config.train.seed)  # the same initial weights as every Ray worker of the same config gets
    ensure_dataset(config.data)
    if config.model.needs_fit or config.data.needs_fit:  # as `pipeline.plan.job.resolve_job` does for Ray runs
        config, choices, _ = fit_auto(config)
        print("\n".join(f"auto: {choice.describe()}" for choice in choices), flush=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    settings = device_settings(config, device, 1, worker_cpus(config, in_ray=False))
    apply_backend_flags(settings)
    data = build_loaders(config, settings=settings)
    last_dir = Path(checkpoint_dir) / "last"
    state = load_checkpoint(last_dir) if resume else None
    trainer = build_trainer(config, data.label_map, schedule_for(config, data), settings, resume=state)

    def save_and_forward(trainer: Trainer, metrics: dict[str, float]) -> None:
        save_checkpoint(make_state(trainer, metrics), last_dir)
        if on_period_end is not None:
            on_period_end(trainer, metrics)

    def save_between(trainer: Trainer, reason: str) -> None:
        save_checkpoint(make_state(trainer, step_metrics(trainer)), last_dir)

    run_schedule(
        trainer, data.train_loader, data.val_loader, data.coco_gt, save_and_forward, print_progress, save_between
    )
    return load_checkpoint(last_dir)


def print_progress(trainer: Trainer, snapshot: dict[str, float]) -> None:
    """The in-period progress line (`pipeline.training.progress.format_step_progress`)."""
    print(format_step_progress(snapshot, trainer.schedule), flush=True)
