"""MLflow runs of one training job or search: start, resume or record a run, params, per-period metrics (from rank 0
only), tags and artifacts.

Everything goes through an explicit `MlflowClient(tracking_uri)` rather than MLflow's global "active run", so
the same code works in the driver and inside a Ray worker whose working directory is elsewhere.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig, flatten, save_config
from pipeline.tracking.store import SQLITE_PREFIX
from pipeline.uri import is_uri


@dataclass(frozen=True)
class RunHandle:
    """Identifies one MLflow run; plain strings, so it pickles into Ray workers."""

    tracking_uri: str
    experiment_id: str
    run_id: str

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.tracking_uri)

    def url(self) -> str:
        """Where to look at the run: a browser address for http stores, else its experiment (printed beside the
        run id and the store)."""
        if self.tracking_uri.startswith(("http://", "https://")):
            return f"{self.tracking_uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        return f"experiment {self.experiment_id}"

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.__dict__), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> RunHandle:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def ensure_experiment(client, name: str, tracking_uri: str) -> str:
    """The id of experiment `name`, created (once, even under concurrent callers) with its artifacts beside a
    SQLite database so `mlflow ui` works from any directory."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if tracking_uri.startswith(SQLITE_PREFIX):
        # keep artifacts beside the database, so `mlflow ui` works from any directory
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        artifact_location = Path(tracking_uri[len(SQLITE_PREFIX) :]).parent.joinpath("mlruns", safe).as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # created concurrently by another process: read it back
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


@dataclass(frozen=True)
class DatasetSplit:
    """One split of the run's dataset, logged as an MLflow dataset input (by reference: nothing is uploaded)."""

    name: str  # "<dataset>-<split>"
    split: str  # train | val
    source: str  # the dataset directory: an absolute path or a URI
    digest: str  # `pipeline.data.dataset_fingerprint`: the registry's comparability key
    images: int
    annotations: int


DATASET_CONTEXT = {"train": "training", "val": "validation"}


def log_datasets(handle: RunHandle, splits: Sequence[DatasetSplit]) -> None:
    """Each split as a dataset input of the run: source, digest, and its sizes as the profile."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = [
        DatasetInput(
            Dataset(
                name=s.name,
                digest=s.digest,
                source_type=s.source.split("://", 1)[0] if is_uri(s.source) else "local",
                source=json.dumps({"uri": s.source}),
                profile=json.dumps({"images": s.images, "annotations": s.annotations}),
            ),
            tags=[InputTag("mlflow.data.context", DATASET_CONTEXT.get(s.split, s.split))],
        )
        for s in splits
    ]
    if inputs:
        handle.client().log_inputs(handle.run_id, datasets=inputs)


def start_run(
    config: PipelineConfig,
    tracking_uri: str,
    label_map: Mapping[str, Any],
    tags: Mapping[str, str] | None = None,
    record: Path | None = None,
    datasets: Sequence[DatasetSplit] = (),
) -> RunHandle:
    """Create the run, log the flattened config as params, the config YAML + label map as artifacts and the dataset
    splits as inputs.

    `tags` add to (or replace) `pipeline.job=train`; a child run of a search carries `mlflow.parentRunId`.
    `record`: a file that keeps the run's handle, so a resumed job continues the same run (`RunHandle.load`)."""
    import tempfile

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(client, config.mlflow.experiment, tracking_uri)
    run = client.create_run(
        experiment_id, run_name=config.mlflow.run_name, tags={"pipeline.job": "train", **(tags or {})}
    )
    handle = RunHandle(tracking_uri, experiment_id, run.info.run_id)
    log_params(handle, flatten(config))
    log_datasets(handle, datasets)
    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifact(handle.run_id, str(save_config(config, Path(tmp) / "config.yaml")))
        label_map_file = Path(tmp) / "label_map.json"
        label_map_file.write_text(json.dumps(dict(label_map), indent=2), encoding="utf-8")
        client.log_artifact(handle.run_id, str(label_map_file))
    if record is not None:
        handle.save(record)
    return handle


def record_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
) -> RunHandle:
    """A run that is complete when written (e.g. one evaluation of a registered model): params, metrics, done."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(client, experiment, tracking_uri)
    run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
    handle = RunHandle(tracking_uri, experiment_id, run.info.run_id)
    log_params(handle, params)
    log_metrics(handle, metrics)
    end_run(handle)
    return handle


def resume_run(handle: RunHandle) -> RunHandle:
    """Mark an existing run as running again (a resumed training continues the same run)."""
    handle.client().update_run(handle.run_id, status="RUNNING")
    return handle


def log_steps(handle: RunHandle, rows: list[tuple[int, Mapping[str, float]]]) -> None:
    """Step metrics of several optimizer steps, `(step, {key: value})` each, in batches of 1000 (the REST API's cap)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(key, float(value), now, step) for step, metrics in rows for key, value in metrics.items()]
    for i in range(0, len(batch), 1000):
        handle.client().log_batch(handle.run_id, metrics=batch[i : i + 1000])


def log_params(handle: RunHandle, params: Mapping[str, Any]) -> None:
    """Params as strings, in batches of 100 (the REST API's cap)."""
    from mlflow.entities import Param

    batch = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(batch), 100):
        handle.client().log_batch(handle.run_id, params=batch[i : i + 100])


def set_tags(handle: RunHandle, tags: Mapping[str, str]) -> None:
    client = handle.client()
    for key, value in tags.items():
        client.set_tag(handle.run_id, key, value)


def log_metrics(handle: RunHandle, metrics: Mapping[str, float], prefix: str = "") -> None:
    """Metrics that are not per-period (e.g. the final evaluation of the best checkpoint)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    handle.client().log_batch(handle.run_id, metrics=[Metric(prefix + k, float(v), now, 0) for k, v in metrics.items()])


def log_artifact(handle: RunHandle, path: str | os.PathLike, artifact_path: str | None = None) -> None:
    handle.client().log_artifact(handle.run_id, str(path), artifact_path)


def log_directory(handle: RunHandle, local_dir: str | os.PathLike, artifact_path: str) -> None:
    """Every file of `local_dir` under `artifact_path` (e.g. a checkpoint directory)."""
    handle.client().log_artifacts(handle.run_id, str(local_dir), artifact_path)


def metric_history(handle: RunHandle, keys: list[str]) -> dict[str, list[tuple[int, float]]]:
    """`{key: [(step, value), ...]}` as stored (across resumes), for the curves plot."""
    client = handle.client()
    return {key: [(m.step, m.value) for m in client.get_metric_history(handle.run_id, key)] for key in keys}


def end_run(handle: RunHandle, status: str = "FINISHED") -> None:
    handle.client().set_terminated(handle.run_id, status=status)
