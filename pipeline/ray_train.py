"""Thin Ray Train adapter: runs `pipeline.training.loop` as DDP on Ray workers, with Ray's checkpointing,
fault tolerance and resume-by-identity, and MLflow tracking from rank 0 through `pipeline.tracking`.

Driver side (`train`): from a resolved job (`pipeline.job`), start Ray (`pipeline.ray_runtime`), start or resume
the MLflow run, fit a `TorchTrainer`, then evaluate and log the best checkpoint. Worker side (`worker_loop`):
prepare loaders (this rank's shard), prepare the model (DDP; gloo on CPU), train, report every evaluation
period.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from pipeline import tracking
from pipeline.config import ConfigError, PipelineConfig, from_dict, to_dict
from pipeline.job import ResolvedJob
from pipeline.ray_runtime import init_ray
from pipeline.training.checkpoint import load_checkpoint, save_checkpoint
from pipeline.training.report import FinalReport, final_report, format_progress, format_step_progress
from pipeline.uri import is_uri


class TrainingJobError(RuntimeError):
    """Training failed (after Ray's restarts); the message says how to resume."""


class TrainingStopped(KeyboardInterrupt):
    """A graceful stop (SIGTERM) ended the run after a checkpoint at `step`; `--resume` continues from there."""

    def __init__(self, step: int, name: str) -> None:
        super().__init__(f"stopped at step {step} after saving its checkpoint (run {name!r})")
        self.step = step


@dataclass
class TrainOutcome:
    name: str  # Ray Train run name: resume with the same storage_path + name
    run_dir: str  # where Ray Train keeps the run: a path, or a URI for object storage
    run: tracking.RunHandle
    report: FinalReport
    last_metrics: dict[str, Any]
    wall_s: float


# ----------------------------------------------------------------------------------------------- worker


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
    import ray.train
    import ray.train.torch

    from pipeline.ray_interrupts import WorkerInterrupts
    from pipeline.training.cost import model_cost
    from pipeline.training.device import apply_backend_flags, device_settings, worker_cpus
    from pipeline.training.faults import record_start
    from pipeline.training.inputs import build_loaders, schedule_for
    from pipeline.training.loop import StopRequested, build_trainer, make_state, run_schedule, step_metrics

    _quiet_per_report_logging()
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
    inputs = build_loaders(config, rank, world, validate=False, settings=settings)  # 1. the driver validated it
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
    )
    start_step = trainer.position.step
    if rank == 0:
        record_start(config, start_step)  # the fault-injection tests' record of each attempt's start
    # a search compares trials on cost too: measured once, on this worker's hardware, sent with every report
    cost = {}
    if loop_config.get("report_cost"):
        cost = model_cost(config, len(inputs.label_map["names"]), ray.train.torch.get_device())
    started = time.perf_counter()
    # rank 0's period and step metrics, logged once a persisted checkpoint holds their step: steps redone after a
    # failure are not logged twice, and none is missing
    pending_steps: list[tuple[int, dict[str, float]]] = []

    def report_with_checkpoint(trainer, metrics: dict[str, float], upload: str = "SYNC") -> None:
        """A barrier: every rank reports at the same step (metrics already all-reduced); rank 0 sends the state.
        `upload="ASYNC"`: Ray uploads it in the background (and deletes the local copy), training goes on."""
        from ray.train import CheckpointUploadMode

        began, step, ckpt = time.perf_counter(), trainer.position.step, None
        local = tempfile.mkdtemp(prefix="effdet-ckpt-") if rank == 0 else None
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
        metrics = {**metrics, **cost, "resumed_from_step": start_step}
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
        pending_steps.append((int(snapshot["step"]), {f"step_{k}": snapshot[k] for k in keys}))
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
        run_schedule(
            trainer, inputs.train_loader, inputs.val_loader, inputs.coco_gt, report, progress, between, interrupts
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


# ----------------------------------------------------------------------------------------------- driver


def _meta_dir(config: PipelineConfig) -> Path:
    """The driver's bookkeeping (MLflow run of each Ray run, the latest run): beside the runs on a filesystem,
    beside the local outputs when the runs live in object storage (s3://, gs://)."""
    storage = config.ray.storage_path
    if is_uri(storage):
        return Path(config.train.output_dir) / "_pipeline"
    return Path(storage) / "_pipeline"


def run_location(storage: str, name: str) -> str:
    """Where Ray Train keeps run `name`: a path, or a URI for object storage."""
    return f"{storage.rstrip('/')}/{name}"


def _run_exists(storage: str, name: str) -> bool:
    if not is_uri(storage):
        return Path(run_location(storage, name)).exists()
    import pyarrow.fs

    filesystem, root = pyarrow.fs.FileSystem.from_uri(run_location(storage, name))
    return filesystem.get_file_info(root).type != pyarrow.fs.FileType.NotFound


def run_name(config: PipelineConfig, resume: bool) -> str:
    """Resume is by identity (storage_path + name): a fresh run gets a new name, `--resume` the latest one."""
    storage = config.ray.storage_path
    if resume:
        name = config.ray.name
        latest = _meta_dir(config) / "latest"
        if name is None and latest.is_file():
            name = latest.read_text(encoding="utf-8").strip()
        if name is None or not _run_exists(storage, name):
            raise ConfigError(f"--resume: no run {name or '(latest)'} under ray.storage_path={storage!r}")
        return name
    name = config.ray.name or datetime.now().strftime("effdet-%Y%m%d-%H%M%S")
    if _run_exists(storage, name):
        raise ConfigError(
            f"ray.name={name!r}: a run of that name exists under {storage}; pass --resume to "
            "continue it or choose another ray.name"
        )
    return name


def _mlflow_run(job: ResolvedJob, name: str, resume: bool) -> tracking.RunHandle:
    """Continue the run's MLflow run on resume (same tracking store), else start one."""
    config, uri = job.config, job.tracking_uri
    meta = _meta_dir(config) / f"{name}.json"
    if resume and meta.is_file():
        handle = tracking.RunHandle.load(meta)
        if handle.tracking_uri == uri:
            return tracking.resume_run(handle)
    handle = tracking.start_run(config, uri, job.label_map, record=meta, datasets=job.datasets)
    (meta.parent / "latest").write_text(name, encoding="utf-8")
    return handle


def build_torch_trainer(
    config: PipelineConfig, name: str, run: tracking.RunHandle | None, callbacks: list | None = None, **extra: Any
):
    """The TorchTrainer of a run named `name` under `ray.storage_path`; `callbacks` are Ray Train callbacks (a
    search's TuneReportCallback), `extra` goes into the workers' loop config (`report_cost`, `epoch_times_file`)."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = {
        "CPU": config.ray.cpus_per_worker,
        **({"GPU": config.ray.gpus_per_worker} if config.ray.use_gpu else {}),
    }
    return TorchTrainer(
        worker_loop,
        train_loop_config={"config": to_dict(config), "run": run.__dict__ if run else None, **extra},
        scaling_config=ScalingConfig(
            num_workers=config.ray.num_workers,
            use_gpu=config.ray.use_gpu,
            resources_per_worker=resources,
            placement_strategy=config.ray.placement_strategy,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=config.ray.storage_path,
            failure_config=FailureConfig(
                max_failures=config.ray.max_failures, max_preemption_failures=config.ray.max_preemptions
            ),
            checkpoint_config=CheckpointConfig(num_to_keep=config.ray.num_to_keep),
            # Ray Train patches print() into its logger, which defeats redirect_stdout (pycocotools' chatter)
            # and doubles our progress lines; Train's own per-report INFO logs would drown them too
            worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=callbacks,
        ),
    )


def train(job: ResolvedJob | PipelineConfig, resume: bool = False, name: str | None = None) -> TrainOutcome:
    """The whole job on Ray: MLflow run, distributed training, final evaluation and artifacts. `job` is resolved
    first when it is a plain config (`pipeline.job.resolve_job`); `name` defaults to `run_name(config, resume)`."""
    import ray

    from pipeline.job import resolve_job

    start = time.perf_counter()
    job = job if isinstance(job, ResolvedJob) else resolve_job(job)
    config = job.config
    name = name or run_name(config, resume)
    started_ray = init_ray(config, job.tracking_uri)
    try:
        run = _mlflow_run(job, name, resume)
        _log_anchor_plot(job, run, Path(config.train.output_dir) / name)
        last = _fit(config, name, run)
    finally:
        if started_ray:
            ray.shutdown()
    try:
        report = _finish(config, run, last, name)
    except BaseException:
        tracking.end_run(run, "FAILED")
        raise
    wall = time.perf_counter() - start
    return TrainOutcome(name, run_location(config.ray.storage_path, name), run, report, dict(last.metrics), wall)


def _log_anchor_plot(job: ResolvedJob, run: tracking.RunHandle, out_dir: Path) -> None:
    """The training boxes' sizes against the anchors the run uses, as it starts."""
    from pipeline.plots import anchor_plot

    tracking.log_artifact(run, anchor_plot(job.analysis, out_dir / "anchors.png"))


def _fit(config: PipelineConfig, name: str, run: tracking.RunHandle):
    """Fit the TorchTrainer; the MLflow run's status follows a failure, a graceful stop or an interruption."""
    import ray
    from ray.train import TrainingFailedError

    from pipeline.ray_interrupts import start_stop_flag, stop_on_sigterm

    flag = start_stop_flag()
    try:
        with stop_on_sigterm(flag):
            result = build_torch_trainer(config, name, run, step_checkpoints=True, stop_flag=flag).fit()
    except TrainingFailedError as e:
        tracking.end_run(run, "FAILED")
        raise TrainingJobError(
            f"training failed after ray.max_failures={config.ray.max_failures} restarts "
            f"(ray.max_preemptions={config.ray.max_preemptions} for preempted nodes): {e}\n"
            f"the last epoch checkpoint is kept: resume with --resume (run {name!r} in {config.ray.storage_path})"
        ) from e
    except (KeyboardInterrupt, SystemExit):  # Ctrl+C ends in SystemExit from Ray Train's own SIGINT handler
        tracking.end_run(run, "KILLED")
        raise
    finally:
        ray.kill(flag)
    if "stopped_at_step" in result.metrics:  # the workers checkpointed and returned early
        tracking.end_run(run, "KILLED")
        raise TrainingStopped(int(result.metrics["stopped_at_step"]), name)
    with result.checkpoint.as_directory() as directory:
        return load_checkpoint(directory)


def _finish(config: PipelineConfig, run: tracking.RunHandle, last, name: str) -> FinalReport:
    """Evaluate the best checkpoint and log it with the curves, PR curve and validation grid."""
    from pipeline.plots import LOSS_KEYS, MAP_KEYS, plot_curves

    out_dir = Path(config.train.output_dir) / name
    report = final_report(config, last, out_dir)
    tracking.log_metrics(run, {**report.metrics, "step": report.best_step, "epoch": report.best_epoch}, prefix="best_")
    report.files["curves"] = plot_curves(tracking.metric_history(run, [*LOSS_KEYS, *MAP_KEYS]), out_dir / "curves.png")
    label_map_file = out_dir / "best_checkpoint" / "label_map.json"
    label_map_file.write_text(json.dumps(last.label_map, indent=2), encoding="utf-8")
    for key, path in report.files.items():
        if key == "best_checkpoint":
            if config.mlflow.log_checkpoint:
                tracking.log_directory(run, path.parent, "best_checkpoint")
        else:
            tracking.log_artifact(run, path)
    tracking.end_run(run, "FINISHED")
    return report
