"""A spot node reclaimed under a run: Ray drains it with a deadline (what the autoscaler does on a preemption
notice), the worker on it checkpoints at its next step, and Ray Train restarts the run on another node from that
checkpoint, counting a preemption, not a failure (`ray.max_failures: 0` would end the run otherwise)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from pipeline.cluster import train as ray_train
from pipeline.config import replace

from .conftest import simulated_cluster

pytestmark = pytest.mark.slow

WATCHER_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "1", "RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S": "0.5"}


@pytest.fixture
def spot_cluster():
    """A head without CPUs (it schedules no worker) and one 1-CPU "spot" node; the preemption watcher on (the
    tests' default is off), inherited by every Ray process started here."""
    import ray

    saved = {key: os.environ.get(key) for key in WATCHER_ENV}
    os.environ.update(WATCHER_ENV)
    try:
        with simulated_cluster(head_cpus=0) as cluster:
            spot = cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, log_to_driver=False)
            yield cluster, spot
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def _drain(cluster, node_id: str, deadline_s: float) -> None:
    """What Ray's autoscaler does on a spot interruption notice: drain the node with the reclaim deadline."""
    import ray
    from ray.core.generated import autoscaler_pb2

    gcs = ray._raylet.GcsClient(address=cluster.address)
    reason = autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION")
    deadline_ms = int((time.time() + deadline_s) * 1000)
    accepted, refusal = gcs.drain_node(node_id, reason, "spot reclaim (test)", deadline_ms)
    assert accepted, refusal


def _wait_for_file(path: Path, timeout: float) -> str:
    end = time.monotonic() + timeout
    while not path.is_file() or not path.read_text().strip():
        assert time.monotonic() < end, f"{path} never written"
        time.sleep(0.1)
    return path.read_text()


def test_a_drained_spot_node_costs_a_checkpoint_and_a_restart_not_a_failure(
    spot_cluster, tiny_config, mlflow_server, tmp_path
):
    cluster, spot = spot_cluster
    starts = tmp_path / "attempts"  # the fault hook's record of each attempt's first step (no fault is injected)
    config = replace(
        tiny_config,
        train={"epochs": 20, "eval_every": 20, "fault_marker": str(starts), "fault_epoch": 1000},  # 80 steps
        ray={"num_workers": 1, "cpus_per_worker": 1, "max_failures": 0, "max_preemptions": 1, "shared_storage": True},
        mlflow={"tracking_uri": mlflow_server, "experiment": "spot-preemption"},  # an experiment of its own
    )
    outcome: dict = {}
    driver = threading.Thread(target=lambda: outcome.update(result=ray_train.train(config)), daemon=True)
    driver.start()
    assert _wait_for_file(Path(f"{starts}.starts"), timeout=300).split() == ["0"]  # the worker is training
    cluster.add_node(num_cpus=1)  # the replacement capacity
    _drain(cluster, spot.node_id, deadline_s=3)
    driver.join(timeout=600)
    assert "result" in outcome, "the run did not finish"
    resumed_from = [int(s) for s in Path(f"{starts}.starts").read_text().split()]
    assert len(resumed_from) == 2 and resumed_from[1] >= 1, resumed_from  # from the notice's checkpoint, not step 0
    assert outcome["result"].last_metrics["step"] == 80
