"""A scaling/hyperparameter search: Ray Tune over Ray Train trials, ASHA early stopping, MLflow parent and child
runs, a leaderboard with accuracy/cost Pareto fronts, and the best model registered.

Layout of a search named N (resume is by that name, as for training):
    <ray.storage_path>/N/                    Tune's experiment (restorable), one folder per trial
    <ray.storage_path>/N/train_runs/<trial>  each trial's Ray Train run (epoch checkpoints)
    <train.output_dir>/searches/N/           spec.json (what was asked), parent run, child runs, report/
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.config import ConfigError, PipelineConfig, replace, to_dict
from pipeline.plan.header import header_lines
from pipeline.plan.job import ResolvedJob, absolute_paths, resolve_job
from pipeline.tuning.leaderboard import TrialRow, mark_fronts, ranked, write_files
from pipeline.tuning.runner import TrialOutcome, fit_search
from pipeline.tuning.space import SearchSpace, load_space
from pipeline.tuning.trial import SearchContext

ALGORITHMS = ("random", "optuna")


@dataclass(frozen=True)
class SearchOptions:
    spaces: tuple[str, ...]
    num_samples: int = 4
    max_epochs: int = 6
    workers_per_trial: int | None = None  # null: the base config's ray.num_workers
    use_gpu: bool = False
    name: str | None = None  # null: a new timestamped name (or the latest search with resume)
    resume: bool = False
    algorithm: str = "random"  # random (with grid dimensions) | optuna (TPE; multi-objective mAP vs GFLOPs)
    metric: str = "val_AP"  # what ASHA and the leaderboard rank by (higher is better)
    grace_period: int = 1  # ASHA: epochs every trial gets before it can be stopped
    reduction_factor: float = 3.0  # ASHA: keep the top 1/rf at each rung
    max_concurrent_trials: int | None = None  # null: as many as the cluster's resources fit
    register: str | None = None  # model name for the best trial; null: do not register
    force_champion: bool = False
    onnx: bool = True  # the registered version carries the ONNX Runtime serving graph

    def check(self) -> None:
        for key, value, low in (("--num-samples", self.num_samples, 1), ("--max-epochs", self.max_epochs, 1)):
            if value < low:
                raise ConfigError(f"{key}={value}: must be >= {low}")
        if self.workers_per_trial is not None and self.workers_per_trial < 1:
            raise ConfigError(f"--workers-per-trial={self.workers_per_trial}: must be >= 1")
        if not 1 <= self.grace_period <= self.max_epochs:
            raise ConfigError(f"--grace-period={self.grace_period}: must be in 1..--max-epochs ({self.max_epochs})")
        if self.reduction_factor <= 1:
            raise ConfigError(f"--reduction-factor={self.reduction_factor}: must be > 1")
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"--algorithm={self.algorithm!r}: choose one of {list(ALGORITHMS)}")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ConfigError(f"--max-concurrent-trials={self.max_concurrent_trials}: must be >= 1")
        if self.register is not None and not self.register.strip():
            raise ConfigError("--register needs a non-empty model name")

    def spec(self) -> dict[str, Any]:
        """What defines the search (compared on resume); naming and registration do not."""
        keep = ("num_samples", "max_epochs", "workers_per_trial", "use_gpu", "algorithm", "metric")
        keep += ("grace_period", "reduction_factor")
        return {k: v for k, v in asdict(self).items() if k in keep}


@dataclass
class SearchOutcome:
    name: str
    experiment_path: str  # Tune's experiment: `Tuner.restore`-able
    report_dir: Path
    parent: tracking.RunHandle
    rows: list[TrialRow]
    files: dict[str, Path] = field(default_factory=dict)
    registration: Any = None  # pipeline.registry.Registration of the best trial, when registered
    interrupted: bool = False
    wall_s: float = 0.0

    @property
    def best(self) -> TrialRow | None:
        top = ranked(self.rows)
        return top[0] if top and math.isfinite(top[0].val_AP) else None  # nan: no trial ever evaluated


def run_search(base: PipelineConfig, options: SearchOptions) -> SearchOutcome:
    """Validate everything, then search; returns the leaderboard (and the registration of the best model)."""
    start = time.perf_counter()
    options.check()
    overrides = {"use_gpu": options.use_gpu or base.ray.use_gpu}
    if options.workers_per_trial is not None:
        overrides["num_workers"] = options.workers_per_trial
    base = replace(base, ray=overrides)
    if base.ray.elastic:  # a trial's size must be fixed: ASHA compares trials step for step, on equal resources
        raise ConfigError(
            f"ray.num_workers={list(base.ray.num_workers)}: a search trial cannot train elastically; give a fixed "
            "worker count (--workers-per-trial N or ray.num_workers: N)"
        )
    space = load_space(list(options.spaces), base)  # every trial's config is valid before anything starts
    if options.algorithm == "optuna" and space.has_grid():
        raise ConfigError("--algorithm optuna samples every dimension: use choice instead of grid in the spaces")
    job = resolve_job(base)
    print("\n".join(header_lines(job, command="tune (base config)")), flush=True)
    config, label_map = job.config, job.label_map
    name, meta_dir = _search_name(config, options)
    _check_spec(meta_dir, _spec(config, options, space), options.resume)
    parent = _parent_run(job, name, meta_dir, options, space)
    storage = config.ray.storage_path.rstrip("/")
    ctx = SearchContext(
        name=name,
        base=to_dict(absolute_paths(base)),  # `auto` anchors stay: each trial fits them to its own model
        space=space,
        max_epochs=options.max_epochs,
        train_storage=f"{storage}/{name}/train_runs",
        meta_dir=str(meta_dir),
        parent=parent,
        label_map=label_map,
        datasets=job.datasets,
    )
    try:
        outcome = fit_search(ctx, options, config, experiment_path=f"{storage}/{name}")
    except BaseException:
        tracking.end_run(parent, "KILLED")
        raise
    result = _report(ctx, outcome, meta_dir / "report")
    if not outcome.interrupted and options.register and result.best is not None:
        result.registration = _register_best(config, ctx, result.best, meta_dir, options)
    tracking.end_run(parent, "KILLED" if outcome.interrupted else "FINISHED")
    result.wall_s = time.perf_counter() - start
    return result


# ------------------------------------------------------------------------------------------ bookkeeping


def _search_name(config: PipelineConfig, options: SearchOptions) -> tuple[str, Path]:
    """A new search gets a new name; `--resume` continues `--name` or the latest search."""
    root = Path(config.train.output_dir) / "searches"
    latest = root / "latest"
    if options.resume:
        name = options.name or (latest.read_text(encoding="utf-8").strip() if latest.is_file() else None)
        if name is None or not (root / name / "spec.json").is_file():
            raise ConfigError(f"--resume: no search {name or '(latest)'} under {root}")
        return name, root / name
    name = options.name or datetime.now().strftime("tune-%Y%m%d-%H%M%S")
    if (root / name).exists():
        raise ConfigError(f"--name {name!r}: a search of that name exists in {root}; use --resume or another name")
    root.mkdir(parents=True, exist_ok=True)
    latest.write_text(name, encoding="utf-8")
    return name, root / name


def _spec(config: PipelineConfig, options: SearchOptions, space: SearchSpace) -> dict[str, Any]:
    spaces = {src: Path(src).read_text(encoding="utf-8") for src in space.sources}
    return {"options": options.spec(), "spaces": spaces, "base_config": to_dict(config)}


def _check_spec(meta_dir: Path, spec: dict[str, Any], resume: bool) -> None:
    """A resumed search must be the same search: same spaces, options and base config."""
    path = meta_dir / "spec.json"
    if not resume:
        meta_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
        return
    stored = json.loads(path.read_text(encoding="utf-8"))
    changed = [
        part for part in spec if json.dumps(spec[part], sort_keys=True) != json.dumps(stored.get(part), sort_keys=True)
    ]
    if changed:
        raise ConfigError(
            f"--resume: this command's {', '.join(changed)} differ from the search's ({path}); rerun the original "
            "command with --resume, or start a new search"
        )


def _parent_run(job: ResolvedJob, name: str, meta_dir: Path, options: SearchOptions, space) -> tracking.RunHandle:
    """The search's MLflow run (continued on resume): base config, search options and the space files."""
    record = meta_dir / "parent_run.json"
    if record.is_file():
        return tracking.resume_run(tracking.RunHandle.load(record))
    tags = {"pipeline.job": "tune", "tune.search": name, "tune.spaces": ", ".join(space.sources)}
    config = replace(job.config, mlflow={"run_name": name})
    handle = tracking.start_run(config, job.tracking_uri, job.label_map, tags=tags, datasets=job.datasets)
    tracking.log_params(handle, {f"tune.{key}": value for key, value in options.spec().items()})
    for source in space.sources:
        tracking.log_artifact(handle, source, "spaces")
    handle.save(record)  # last: a search whose parent run is half set up starts a new one
    return handle


# ------------------------------------------------------------------------------------------- reporting


def _report(ctx: SearchContext, outcome: TrialOutcome, report_dir: Path) -> SearchOutcome:
    """Leaderboard, Pareto fronts and plot, logged to the parent run; child runs closed with their outcome."""
    rows = outcome.rows
    mark_fronts(rows)
    files = write_files(rows, report_dir) if rows else {}
    _close_child_runs(ctx, rows)
    for path in files.values():
        tracking.log_artifact(ctx.parent, path, "leaderboard")
    counts = {status: sum(r.status == status for r in rows) for status in {r.status for r in rows}}
    metrics = {f"trials_{s.replace(' ', '_')}": n for s, n in counts.items()}
    result = SearchOutcome(
        ctx.name, outcome.experiment_path, report_dir, ctx.parent, rows, files, None, outcome.interrupted
    )
    if result.best is not None:
        metrics |= {"best_val_AP": result.best.val_AP, "best_val_AP50": result.best.val_AP50}
        tracking.set_tags(ctx.parent, {"tune.best_trial": result.best.trial_id})
    tracking.log_metrics(ctx.parent, metrics)
    return result


def _close_child_runs(ctx: SearchContext, rows: list[TrialRow]) -> None:
    """Each child run gets its outcome and best epoch here: a trial stopped by ASHA never returns to do it."""
    for row in rows:
        record = ctx.child_run_file(row.trial_id)
        if not record.is_file() or row.status == "pending":
            continue
        run = tracking.RunHandle.load(record)
        tracking.set_tags(run, {"tune.status": row.status})
        if math.isfinite(row.val_AP):  # it evaluated at least once
            best = {"val_AP": row.val_AP, "val_AP50": row.val_AP50, "epoch": row.best_epoch}
            tracking.log_metrics(run, best, prefix="best_")
        tracking.end_run(run, "FAILED" if row.status == "error" else "FINISHED")


def _register_best(config: PipelineConfig, ctx: SearchContext, best: TrialRow, meta_dir: Path, options: SearchOptions):
    """Register the best trial's best-epoch weights; the registry's champion rule decides the alias."""
    from ray.train import Checkpoint

    from pipeline.registry import dataset_fingerprint, register_from_checkpoint
    from pipeline.training.checkpoint import load_checkpoint

    done = meta_dir / "registered.json"
    if done.is_file():  # a resumed, already finished search does not register twice
        print(f"already registered: {json.loads(done.read_text(encoding='utf-8'))['model_uri']}", flush=True)
        return None
    if best.checkpoint_path is None:
        raise ConfigError(f"trial {best.trial_id} reported no checkpoint; nothing to register")
    with Checkpoint(path=best.checkpoint_path).as_directory() as directory:
        state = load_checkpoint(directory)
    child = tracking.RunHandle.load(ctx.child_run_file(best.trial_id))
    registration = register_from_checkpoint(
        state,
        options.register,
        ctx.parent.tracking_uri,
        metrics=None,  # the best epoch's metrics, from the checkpoint
        dataset_fingerprint=dataset_fingerprint(config.data.dir, "val"),
        run_id=child.run_id,
        force=options.force_champion,
        onnx=options.onnx,
        data_dir=config.data.dir,
    )
    done.write_text(json.dumps({"model_uri": registration.model_uri, "trial_id": best.trial_id}), encoding="utf-8")
    tracking.set_tags(ctx.parent, {"tune.registered_model": registration.model_uri})
    return registration
