"""Suite-wide isolation: no test leaks MLflow's process-global URIs or environment into the next one."""

from __future__ import annotations

import os

import pytest

_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


@pytest.fixture(autouse=True)
def _isolate_mlflow_globals():
    saved_env = {key: os.environ.get(key) for key in _MLFLOW_ENV}
    yield
    import mlflow

    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
