"""MLflow tracking: the one door to MLflow runs, used from the driver and rank 0 only (`from pipeline import
tracking; tracking.start_run(...)`).

Owns: `store` (which tracking store a job uses, and a fail-fast reachability check) and `runs` (start, resume or
record a run; params, tags, metrics, datasets, artifacts). May import: `pipeline.config`, `pipeline.uri`, MLflow.
The training loop never imports it (`lint-imports` checks that); the registry, the Ray layer, search and CLI do.
"""

from pipeline.tracking.runs import (
    DATASET_CONTEXT,
    DatasetSplit,
    RunHandle,
    end_run,
    ensure_experiment,
    log_artifact,
    log_datasets,
    log_directory,
    log_metrics,
    log_params,
    log_steps,
    metric_history,
    record_run,
    resume_run,
    set_tags,
    start_run,
)
from pipeline.tracking.store import SQLITE_PREFIX, TrackingError, check_tracking_store, resolve_tracking_uri, ui_hint

__all__ = [
    "DATASET_CONTEXT",
    "SQLITE_PREFIX",
    "DatasetSplit",
    "RunHandle",
    "TrackingError",
    "check_tracking_store",
    "end_run",
    "ensure_experiment",
    "log_artifact",
    "log_datasets",
    "log_directory",
    "log_metrics",
    "log_params",
    "log_steps",
    "metric_history",
    "record_run",
    "resolve_tracking_uri",
    "resume_run",
    "set_tags",
    "start_run",
    "ui_hint",
]
