"""Tracking-store resolution (`pipeline.tracking.store`) and the fail-fast checks that run before any training
starts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.config import replace
from pipeline.plan.job import resolve_job
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
    assert not (Path(storage).exists() and any(Path(storage).iterdir())), "no run started"
    assert "mlflow ui --backend-store-uri sqlite:////x/mlflow.db" in ui_hint("sqlite:////x/mlflow.db")
