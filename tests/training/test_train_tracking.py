"""Tracking-store resolution and the fail-fast checks that run before any training starts."""

from __future__ import annotations

import time

import pytest

from pipeline import ray_train
from pipeline.config import replace
from pipeline.job import resolve_job
from pipeline.tracking import TrackingError, check_tracking_store, resolve_tracking_uri, ui_hint


def test_relative_sqlite_uri_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, cwd=tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking_uri("sqlite:///runs/x.db", cwd=tmp_path) == f"sqlite:///{tmp_path}/runs/x.db"
    assert resolve_tracking_uri("sqlite:////abs/x.db", cwd=tmp_path) == "sqlite:////abs/x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri(None, cwd=tmp_path) == "http://127.0.0.1:5999"
    assert resolve_tracking_uri("sqlite:///a.db", cwd=tmp_path) == f"sqlite:///{tmp_path}/a.db"  # config wins


def test_plain_file_store_is_refused_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(TrackingError, match="MLFLOW_ALLOW_FILE_STORE"):
        resolve_tracking_uri("mlruns", cwd=tmp_path)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert resolve_tracking_uri("mlruns", cwd=tmp_path) == (tmp_path / "mlruns").as_uri()


def test_sqlite_in_missing_directory_is_reported(tmp_path):
    with pytest.raises(TrackingError, match="does not exist or is not writable"):
        check_tracking_store(f"sqlite:///{tmp_path}/no/such/dir/mlflow.db")


def test_unreachable_server_stops_the_job_before_training(tiny_config, unused_port):
    uri = f"http://127.0.0.1:{unused_port}"  # nothing listens there
    config = replace(tiny_config, mlflow={"tracking_uri": uri})
    start = time.perf_counter()
    with pytest.raises(TrackingError, match=f"MLflow tracking server {uri} is unreachable"):
        resolve_job(config)
    assert time.perf_counter() - start < 30
    storage = tiny_config.ray.storage_path
    assert not (ray_train.Path(storage).exists() and any(ray_train.Path(storage).iterdir())), "no run started"
    assert "mlflow ui --backend-store-uri sqlite:////x/mlflow.db" in ui_hint("sqlite:////x/mlflow.db")


def test_run_names_and_resume_work_with_a_storage_uri(tiny_config, tmp_path):
    from pathlib import Path

    from pipeline.config import ConfigError

    storage = (tmp_path / "bucket").as_uri()  # file:// goes through pyarrow, as s3:// and gs:// do
    config = replace(tiny_config, ray={"storage_path": storage, "name": "run1"})
    with pytest.raises(ConfigError, match="--resume: no run run1"):
        ray_train.run_name(config, resume=True)
    assert ray_train.run_name(config, resume=False) == "run1"
    (tmp_path / "bucket" / "run1").mkdir(parents=True)
    with pytest.raises(ConfigError, match="a run of that name exists"):
        ray_train.run_name(config, resume=False)
    assert ray_train.run_name(config, resume=True) == "run1"
    # the driver's bookkeeping cannot live in object storage: it stays beside the local outputs
    assert ray_train._meta_dir(config) == Path(config.train.output_dir) / "_pipeline"
    assert ray_train.run_location(storage, "run1") == f"{storage}/run1"
