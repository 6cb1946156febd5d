"""Thin Ray Train adapter, driver side: runs `pipeline.training.loop` as DDP on Ray workers
(`pipeline.cluster.worker`), with Ray's checkpointing, fault tolerance and resume-by-identity, and MLflow tracking
through `pipeline.tracking`.

`train(job)`: from a resolved job (`pipeline.plan.job`), start Ray (`pipeline.cluster.runtime`), start or resume
the MLflow run, fit a `TorchTrainer`, then evaluate and log the best checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.cluster.interrupts import start_stop_flag, stop_on_sigterm
from pipeline.cluster.runtime import init_ray
from pipeline.cluster.worker import worker_loop
from pipeline.config import ConfigError, PipelineConfig, to_dict
from pipeline.plan.job import ResolvedJob, resolve_job
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.elastic import WorldHistory
from pipeline.training.report import FinalReport, final_report
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
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig
    from ray.train.torch import TorchTrainer

    resources = {
        "CPU": config.ray.cpus_per_worker,
        **({"GPU": config.ray.gpus_per_worker} if config.ray.use_gpu else {}),
    }
    return TorchTrainer(
        worker_loop,
        train_loop_config={"config": to_dict(config), "run": run.__dict__ if run else None, **extra},
        scaling_config=scaling_config(config, resources),
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


def scaling_config(config: PipelineConfig, resources: dict[str, float]):
    """Ray Train's ScalingConfig: a fixed group, or (MIN, MAX) resized by Train's own elastic controller."""
    from ray.train import ScalingConfig

    ray_config = config.ray
    elastic = {}
    if ray_config.elastic:
        elastic = {"elastic_resize_monitor_interval_s": ray_config.elastic_resize_interval_s}
    return ScalingConfig(
        num_workers=(ray_config.min_workers, ray_config.max_workers) if ray_config.elastic else ray_config.max_workers,
        use_gpu=ray_config.use_gpu,
        resources_per_worker=resources,
        placement_strategy=ray_config.placement_strategy,
        **elastic,
    )


def train(job: ResolvedJob | PipelineConfig, resume: bool = False, name: str | None = None) -> TrainOutcome:
    """The whole job on Ray: MLflow run, distributed training, final evaluation and artifacts. `job` is resolved
    first when it is a plain config (`pipeline.plan.job.resolve_job`); `name` defaults to `run_name(config, resume)`."""
    import ray

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
    from pipeline.evaluation.plots import anchor_plot

    tracking.log_artifact(run, anchor_plot(job.analysis, out_dir / "anchors.png"))


def _fit(config: PipelineConfig, name: str, run: tracking.RunHandle):
    """Fit the TorchTrainer; the MLflow run's status follows a failure, a graceful stop or an interruption."""
    import ray
    from ray.train import TrainingFailedError

    flag = start_stop_flag()
    try:
        with stop_on_sigterm(flag):
            trainer = build_torch_trainer(
                config, name, run, step_checkpoints=True, stop_flag=flag, deadline=_deadline(config)
            )
            result = trainer.fit()
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


def _deadline(config: PipelineConfig) -> float | None:
    """`train.minutes` counts from this process's start: the job's whole wall time, start-up included."""
    if config.train.minutes is None:
        return None
    from pipeline import PROCESS_STARTED

    return PROCESS_STARTED + 60 * config.train.minutes


def _finish(config: PipelineConfig, run: tracking.RunHandle, last, name: str) -> FinalReport:
    """Evaluate the best checkpoint and log it with the curves, PR curve and validation grid."""
    from pipeline.evaluation.plots import LOSS_KEYS, MAP_KEYS, plot_curves

    out_dir = Path(config.train.output_dir) / name
    if config.ray.elastic and last.world is not None:  # the run's resizes and its time below the largest size
        history = WorldHistory.from_dict(last.world)
        print(history.summary(), flush=True)
        tracking.log_metrics(run, {"elastic_resizes": len(history.resizes), "elastic_reduced_s": history.reduced_s})
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
