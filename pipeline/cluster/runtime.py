"""Ray start-up for train and tune: connect to (or start) Ray, check the workers fit and storage is shared where it
must be, and keep Ray 2.60's harmless start-up chatter out of the user's terminal."""

from __future__ import annotations

import contextlib
import os
import signal
import threading

from pipeline.cluster.storage import check_shared_storage, reachable_resources
from pipeline.config import ConfigError, PipelineConfig


@contextlib.contextmanager
def keep_sigterm_handler():
    """`ray.init` installs its own SIGTERM handlers (exit at once, leaving the MLflow run RUNNING); a handler the
    caller installed (the CLI's graceful stop) is put back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(previous):  # a Python handler of the caller's, not the default action
            signal.signal(signal.SIGTERM, previous)


def init_ray(config: PipelineConfig, tracking_uri: str, local_resources: dict[str, float] | None = None) -> bool:
    """Connect to (or start) Ray and check it can place the workers (counting what an autoscaler may add) and that
    storage and tracking are reachable from every node the workers may use; True when this call started it.

    `tracking_uri`: the job's resolved store (`ResolvedJob.tracking_uri`). `local_resources`: custom resources of
    a Ray started here (a search's `train_driver` slots); a cluster declares its own in its definition (cluster/)."""
    import ray

    started = False
    if not ray.is_initialized():
        address = config.ray.cluster_address()
        with keep_sigterm_handler():
            if address:
                ray.init(address=address)
            else:  # local: the dashboard keeps placement groups tidy, ASHA-stopped trials too (RAY_MLFLOW_NOTES)
                ray.init(
                    address="local",  # a new Ray: never one that a `ray start` on this machine left running
                    num_cpus=os.cpu_count(),
                    resources=local_resources,
                    include_dashboard=True,
                    dashboard_host="127.0.0.1",
                    log_to_driver=True,
                )
        started = True
    try:
        _drop_harmless_worker_lines()
        _start_autoscaling_coordinator()
        need_cpu = run_cpus(config)
        have = reachable_resources()  # an autoscaling cluster starts with its head alone
        if have.get("CPU", 0) < need_cpu or (config.ray.use_gpu and have.get("GPU", 0) < config.ray.min_workers):
            tasks = f" + data.ray_cpus_per_task={config.data.ray_cpus_per_task}" if ray_data(config) else ""
            raise ConfigError(
                f"ray.num_workers={config.ray.describe_workers()} x ray.cpus_per_worker={config.ray.cpus_per_worker}"
                f"{' + 1 GPU each' if config.ray.use_gpu else ''}{tasks} does not fit the cluster's resources {have}"
                + (" (data.engine: ray needs CPUs the training workers leave free)" if tasks else "")
            )
        check_shared_storage(config, tracking_uri)
    except BaseException:
        if started:
            ray.shutdown()
        raise
    return started


def ray_data(config: PipelineConfig) -> bool:
    return config.data.engine == "ray"


def run_cpus(config: PipelineConfig) -> float:
    """CPUs one training run must find: its workers' (an elastic run's MIN), plus one Ray Data task's with
    `data.engine: ray` (or the tasks would wait forever behind the workers)."""
    tasks = config.data.ray_cpus_per_task if ray_data(config) else 0.0
    return config.ray.min_workers * config.ray.cpus_per_worker + tasks


# Lines Ray 2.60 prints on every healthy run that say nothing to act on; matched exactly, nothing else is hidden.
HARMLESS_WORKER_LINES = (
    # Ray Train's controller creates its PreemptionWatcher with restartable constructor arguments (ray#53727)
    "Actor with class name: 'PreemptionWatcher'",
)


def _drop_harmless_worker_lines() -> None:
    """Filter HARMLESS_WORKER_LINES out of the worker output Ray forwards to this driver (`log_to_driver`)."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:  # another Ray layout: print everything
        return
    with dispatcher._lock:
        handlers = []
        for name, handler in dispatcher.handlers:
            if name == "ray_print_logs" and not getattr(handler, "drops_harmless_lines", False):
                handler = _filtered(handler)
            handlers.append((name, handler))
        dispatcher.handlers = handlers


def _filtered(handler):
    def emit(data: dict) -> None:
        lines = [line for line in data.get("lines", []) if not any(s in line for s in HARMLESS_WORKER_LINES)]
        if lines:
            handler({**data, "lines": lines})

    emit.drops_harmless_lines = True
    return emit


def _start_autoscaling_coordinator() -> None:
    """Start Ray Train's autoscaling-coordinator actor now and wait until it is up.

    Ray Train 2.60's controller creates it on its first resource request and waits 5 s for the answer; on a busy
    machine a new actor process takes longer to start, and the controller logs the timeout with a 20-line
    traceback ("Failed to send resource request ... GetTimeoutError") although nothing is wrong. Created here,
    the actor answers at once. (A private Ray API: the import is guarded, and Ray is pinned to 2.60.)
    """
    import ray

    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )
    except ImportError:
        return
    coordinator = get_or_create_autoscaling_coordinator()
    ray.get(coordinator.__ray_ready__.remote(), timeout=120)
