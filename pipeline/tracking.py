"""MLflow tracking of one training run: URI resolution, a reachability check before training, params,
per-period metrics (from rank 0 only) and the run's artifacts.

Everything goes through an explicit `MlflowClient(tracking_uri)` rather than MLflow's global "active run", so
the same code works in the driver and inside a Ray worker whose working directory is elsewhere.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig, flatten
from pipeline.uri import is_uri

SQLITE_PREFIX = "sqlite:///"
# MLflow logs two INFO lines ("Creating initial MLflow database tables...") when it creates a SQLite store; the
# run header already says where the store is. Its warnings and errors still show.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)


class TrackingError(RuntimeError):
    """The tracking store cannot be used; raised before any training starts."""


def resolve_tracking_uri(configured: str | None, cwd: str | os.PathLike | None = None) -> str:
    """Config value, else MLFLOW_TRACKING_URI, else `sqlite:///<cwd>/mlflow.db`; local paths made absolute.

    Ray workers chdir into a session folder, so a relative SQLite or file path must be resolved here, in the
    driver, before they see it.
    """
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    base = Path(cwd or os.getcwd())
    if uri.startswith(SQLITE_PREFIX):
        db_path = uri[len(SQLITE_PREFIX) :]
        if db_path and not db_path.startswith("/") and db_path != ":memory:":
            return SQLITE_PREFIX + str((base / db_path).resolve())
        return uri
    if uri.startswith("file:") or not is_uri(uri):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("1", "true"):
            local = uri.removeprefix("file://").removeprefix("file:")
            return (base / local).resolve().as_uri()
        raise TrackingError(
            f"tracking URI {uri!r} is a plain file store, which MLflow 3 refuses without "
            "MLFLOW_ALLOW_FILE_STORE=true; use sqlite:///<path>/mlflow.db locally or an http:// tracking server"
        )
    return uri


@contextmanager
def _quick_http_failures():
    """MLflow retries HTTP calls for minutes by default; a reachability check should fail in seconds."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "10"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_tracking_store(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with a clear message, when the tracking store cannot be reached or written."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
                response.read()
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({reason}); start it (e.g. `mlflow server --host "
                f"127.0.0.1 --port PORT`) or set mlflow.tracking_uri / MLFLOW_TRACKING_URI"
            ) from None
    elif uri.startswith(SQLITE_PREFIX):
        parent = Path(uri[len(SQLITE_PREFIX) :]).parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise TrackingError(f"tracking URI {uri}: directory {parent} does not exist or is not writable")
    from mlflow.tracking import MlflowClient

    try:
        with _quick_http_failures():
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:  # any store error means we cannot track this run
        raise TrackingError(f"MLflow tracking store {uri} is not usable: {type(e).__name__}: {e}") from None


def ui_hint(uri: str) -> str:
    """How to look at the runs of this tracking store."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    # the mlflow next to this interpreter: a fresh user's shell usually has the venv's bin/ off PATH
    beside = Path(sys.executable).parent / "mlflow"
    mlflow_cli = str(beside) if beside.is_file() else "mlflow"
    return f"{mlflow_cli} ui --backend-store-uri {uri}  (then open http://127.0.0.1:5000)"


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

    from pipeline.config import save_config

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
