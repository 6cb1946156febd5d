"""Suite-wide: no test leaks MLflow's process-global URIs or environment into the next one; `gpu` tests skip,
saying why, where torch sees no CUDA device; the servers tests share (MLflow, S3) start once per session."""

from __future__ import annotations

import os

import pytest

# Ray Train on a 2-core machine running many short runs (inherited by every Ray process and CLI the tests start):
# no preemption watcher (an actor per run that polls for spot-node preemption notices: no test preempts a node),
# and the controller polls its workers every 0.5 s instead of 2 s, so a run's end is seen sooner.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")

# The cores shared out among the suite's processes (`make test` runs two): each pytest process, and every process it
# starts (Ray workers, CLIs, servers), runs torch on its share of OpenMP threads, and an idle OpenMP thread sleeps
# instead of spinning; both set before torch is first imported. Measured on the 2-core machine, the spot-preemption
# test beside the accuracy floors (`pytest -n 2` of the two files): 206 s with spinning threads, 80 s without.
_PROCESSES = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _PROCESSES)))  # the CPUs we may use
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Each pytest process's Ray clusters under a temp root of their own. Ray Train's placement-group cleaner (a detached
# actor per run) asks the state API whether the run's controller is alive without an address, so it finds "the"
# cluster from <temp root>/ray/ray_current_cluster, which `ray.cluster_utils` rewrites: with one root shared, a local
# run in one process asked the other process's simulated cluster, found no such controller, and removed the live
# run's placement group (a ControllerError, "placement group was removed", in test_train_ray under `make test`).
if _WORKER := os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("RAY_TMPDIR", f"/tmp/ray-{_WORKER}")  # short: Ray's unix sockets live under it
    os.makedirs(os.environ["RAY_TMPDIR"], exist_ok=True)

_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


def pytest_collection_modifyitems(config, items):
    _slow_files_first(items)
    gpu_tests = [item for item in items if "gpu" in item.keywords]
    if not gpu_tests:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA (torch sees no GPU): benchmarks/gpu_check.sh runs it on one")
        for item in gpu_tests:
            item.add_marker(skip)


def _slow_files_first(items) -> None:
    """The files holding `slow` tests (Ray runs, servers, searches) first, each file's order kept: `make test`'s two
    processes take whole files in this order, so the long ones start early instead of one ending the run alone."""
    slow_files = {item.path for item in items if "slow" in item.keywords}
    items.sort(key=lambda item: item.path not in slow_files)  # a stable sort: the collection order within each kind


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


@pytest.fixture
def check_plot():
    """`check_plot(path)`: the file is a PNG of at least 300 px across with something drawn on it (a real share of
    dark pixels on a light background), not merely a file that exists or is large."""

    def check(path, min_width: int = 300) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] >= min_width, (path, image.format, image.size)
            gray = np.asarray(image.convert("L"))
        dark, light = (gray < 128).mean(), (gray > 200).mean()
        assert 0.002 < dark < 0.5 and light > 0.3, f"{path}: {dark:.1%} dark, {light:.1%} light pixels"

    return check


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 shared by the session (tests/mlflow_server.py): its URI. Tests that use
    it log into an experiment of their own (MLflow keeps datasets per experiment: a dataset of the same name and
    digest that another test logged there would be reused, with that test's source), and use registered model
    names no other test uses."""
    from mlflow_server import running_mlflow_server

    with running_mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as uri:
        yield uri


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 API on 127.0.0.1 (tests/s3_server.py). Its endpoint and credentials are in `os.environ` for the
    rest of the session, as a node's would be: Ray workers started after it inherit them."""
    from s3_server import start_s3_server

    from pipeline.data import storage

    server = start_s3_server(tmp_path_factory.mktemp("s3") / "moto_server.log")
    saved = {key: os.environ.get(key) for key in server.env}
    os.environ.update(server.env)
    storage._s3.cache_clear()
    yield server
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    storage._s3.cache_clear()
