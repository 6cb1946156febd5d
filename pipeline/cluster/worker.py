"""The per-worker function of a Ray Train run: the training loop as one DDP rank, with Ray's checkpoints and
reports.

`worker_loop` runs in every worker process: 1. loaders (this rank's shard), 2. model (DDP, restored from the
latest checkpoint), 3. train (`pipeline.training.loop.run_schedule`), 4. report each evaluation period (a barrier:
every rank reports at the same step) and rank 0 logs to MLflow once a checkpoint holds the step.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pipeline import tracking
from pipeline.cluster.interrupts import WorkerInterrupts
from pipeline.config import from_dict
from pipeline.training.checkpoint import load_checkpoint, save_checkpoint
from pipeline.training.cost import model_cost
from pipeline.training.device import apply_backend_flags, device_settings, worker_cpus
from pipeline.training.elastic import resize_line, resume_world
from pipeline.training.faults import record_start
from pipeline.training.inputs import build_loaders, schedule_for
from pipeline.training.loop import StopRequested, make_state, run_schedule, step_metrics
from pipeline.training.progress import format_progress, format_step_progress
from pipeline.training.trainer import build_trainer


def _quiet_per_report_logging() -> None:
    """Ray Train 2.60 logs every report with all its metrics at INFO, from each rank, through a logger named by
    its file path: outside the "ray.train" hierarchy that LoggingConfig sets, so it is quieted here."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray layout: nothing to quiet
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def worker_loop(loop_config: dict[str, Any]) -> None:
    """Per-worker function: 1. loaders (this rank's shard), 2. model (DDP, restored), 3. train, 4. report."""
    import ray.train  # in the worker process: the module stays importable without a Ray cluster
    import ray.train.torch

    _quiet_per_report_logging()
    began = time.time()  # a search trial's time budget counts from here (a training job's from the driver's start)
    config = from_dict(loop_config["config"])
    run = tracking.RunHandle(**loop_config["run"]) if loop_config.get("run") else None
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    # one intra-op thread per CPU this worker holds; more only oversubscribes the cores other workers hold
    torch.set_num_threads(config.train.threads_per_worker or max(1, int(config.ray.cpus_per_worker)))
    torch.manual_seed(config.train.seed)  # same init on every rank (DDP also broadcasts rank 0's weights)

    settings = device_settings(config, ray.train.torch.get_device(), world, worker_cpus(config, in_ray=True))
    apply_backend_flags(settings)
    if rank == 0:
        print(f"worker: {settings.describe()}", flush=True)
    max_world = config.ray.max_workers  # an elastic run keeps its largest size's global batch at every size
    # 1. the driver validated the data
    inputs = build_loaders(config, rank, world, validate=False, settings=settings, max_world=max_world)
    checkpoint = ray.train.get_checkpoint()  # 2. the latest reported one after a restart or on resume
    state = None
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(directory)
    trainer = build_trainer(
        config,
        inputs.label_map,
        schedule_for(config, inputs),
        settings,
        wrap=ray.train.torch.prepare_model,
        resume=state,
        max_world=max_world,
    )
    start_step = trainer.position.step
    layout = inputs.train_loader.sampler.layout
    trainer.world_history = resume_world(state.world if state else None, world, max_world, start_step)
    world_metrics = {"world_size": world, "grad_accumulation": layout.batches_per_step}
    record_start(config, start_step)  # the fault-injection tests' record of each attempt's start
    if rank == 0 and (line := resize_line(trainer.world_history, layout)):
        print(line, flush=True)
    # a search compares trials on cost too: measured once, on this worker's hardware, sent with every report
    cost = {}
    if loop_config.get("report_cost"):
        cost = model_cost(config, len(inputs.label_map["names"]), ray.train.torch.get_device())
    started = time.perf_counter()
    # rank 0's period and step metrics, logged once a persisted checkpoint holds their step: steps redone after a
    # failure are not logged twice, and none is missing
    pending_steps: list[tuple[int, dict[str, float]]] = [(start_step, dict(world_metrics))]
    if rank == 0 and run is not None and trainer.world_history.resized_now:
        last = trainer.world_history.resizes[-1]
        tracking.set_tags(
            run,
            {
                f"elastic.resize.{len(trainer.world_history.resizes)}": f"step {last['step']}: {last['from']} -> "
                f"{last['to']} workers ({last['why']})"
            },
        )

    def report_with_checkpoint(trainer, metrics: dict[str, float], upload: str = "SYNC") -> None:
        """A barrier: every rank reports at the same step (metrics already all-reduced); rank 0 sends the state.
        `upload="ASYNC"`: Ray uploads it in the background (and deletes the local copy), training goes on."""
        from ray.train import CheckpointUploadMode

        began, step, ckpt = time.perf_counter(), trainer.position.step, None
        local = tempfile.mkdtemp(prefix="effdet-ckpt-") if rank == 0 else None
        trainer.world_history.tick()  # the time below the largest size, up to this checkpoint
        if local is not None:  # one copy of the (identical) DDP state is enough
            save_checkpoint(make_state(trainer, metrics), local)
            ckpt = ray.train.Checkpoint.from_directory(local)
        mode = CheckpointUploadMode[upload]
        try:
            ray.train.report(
                metrics, checkpoint=ckpt, checkpoint_dir_name=f"step_{step:07d}", checkpoint_upload_mode=mode
            )
        finally:
            if local is not None and mode is CheckpointUploadMode.SYNC:
                shutil.rmtree(local, ignore_errors=True)
        if rank == 0:  # what the step waited for the checkpoint (with ASYNC, not the upload itself)
            pending_steps.append((step, {"checkpoint_s": time.perf_counter() - began}))
            log_persisted()

    def log_persisted() -> None:
        """Rank 0: log the pending metrics a restart would not redo, up to the last persisted checkpoint (after a
        SYNC report, the one just made; an ASYNC one counts once its upload is done)."""
        committed = _checkpoint_step(ray.train.get_checkpoint())
        if run is not None and any(s <= committed for s, _ in pending_steps):
            tracking.log_steps(run, [row for row in pending_steps if row[0] <= committed])
        pending_steps[:] = [row for row in pending_steps if row[0] > committed]

    def report(trainer, metrics: dict[str, float]) -> None:  # 4.
        step = int(metrics["step"])
        metrics = {**metrics, **cost, **world_metrics, "resumed_from_step": start_step}
        if rank == 0:
            pending_steps.append((step, metrics))  # logged once its checkpoint persisted
        report_with_checkpoint(trainer, metrics)
        if rank == 0:  # the period's line once its checkpoint and metrics are kept
            total = trainer.schedule.total_steps
            eta = (time.perf_counter() - started) / (step - start_step) * (total - step)
            print(format_progress(step, total, metrics, eta), flush=True)
        if rank == 0 and loop_config.get("epoch_times_file"):  # benchmarks: when each period's report returned
            with open(loop_config["epoch_times_file"], "a", encoding="utf-8") as f:
                f.write(f"{step} {time.time()}\n")

    def progress(trainer, snapshot: dict[str, float]) -> None:  # rank 0, at most every train.log_every_seconds
        print(format_step_progress(snapshot, trainer.schedule), flush=True)
        keys = ("train_loss", "images_per_s", "data_wait_share", "lr")
        pending_steps.append((int(snapshot["step"]), {**{f"step_{k}": snapshot[k] for k in keys}, **world_metrics}))
        log_persisted()  # an ASYNC checkpoint's upload may have finished since

    def checkpoint_between(trainer, reason: str) -> None:
        # by steps or minutes: uploaded while training goes on if train.checkpoint_upload says so; before a stop or
        # a preemption: durable first
        metrics = step_metrics(trainer)
        if reason == "stop":  # what the driver reads in the run's result: its last checkpoint's metrics
            metrics["stopped_at_step"] = trainer.position.step
        asynchronous = reason in ("steps", "minutes") and config.train.checkpoint_upload == "async"
        report_with_checkpoint(trainer, metrics, "ASYNC" if asynchronous else "SYNC")

    # a search trial's reports go to Tune's scheduler, which needs val_AP in every one: trials checkpoint at
    # evaluations only
    between = checkpoint_between if loop_config.get("step_checkpoints") else None
    # a stop the driver asks for and Ray's preemption notices: a checkpoint at the next step (rank 0 polls)
    interrupts = WorkerInterrupts(loop_config.get("stop_flag") if rank == 0 else None) if between else None
    try:  # 3.
        deadline = loop_config.get("deadline")
        if deadline is None and config.train.minutes is not None:
            deadline = began + 60 * config.train.minutes
        run_schedule(
            trainer,
            inputs.train_loader,
            inputs.val_loader,
            inputs.coco_gt,
            report,
            progress,
            between,
            interrupts,
            deadline,
        )
    except StopRequested as stop:  # every rank, after the stop's checkpoint (its metrics tell the driver)
        if rank == 0:
            print(f"stopped on request at step {stop.step}: checkpoint saved", flush=True)


def _checkpoint_step(checkpoint) -> int:
    """The optimizer step of a checkpoint this run reported (its directory is `step_NNNNNNN`); -1 for none."""
    if checkpoint is None:
        return -1
    name = Path(checkpoint.path).name
    return int(name.removeprefix("step_")) if name.startswith("step_") and name[5:].isdigit() else -1
