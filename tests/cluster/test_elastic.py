"""Elastic training on a simulated cluster (1-CPU raylets on this machine): a `ray.num_workers: [1, 2]` run starts on
2 workers, loses a node inside an epoch and goes on with 1 worker accumulating 2 micro-batches, then grows back to 2
when a node is added; through both resizes every step trains the same global batch, every image once per epoch,
with the learning rate and (within float noise) the loss of a fixed-size run of the same recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.cluster import train as ray_train
from pipeline.config import replace
from pipeline.training.loop import fit

from .conftest import simulated_cluster

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).parent / "ray")
# 16 train images, global batch 8 (2 workers x 4): 2 steps per epoch, 50 steps; the growth comes ~20 s after the node
# joins (Ray's coordinator refreshes its view of the nodes every 20 s), some 10-15 steps on one worker
EPOCHS = 25


def _wait_until(predicate, what: str, timeout: float = 300.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.05)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _effective(records: list[dict]) -> dict[int, list[dict]]:
    """Per step, the micro-batches of the attempt that trained it for good: the latest attempt that started before
    it (an attempt cut by a resize may have begun steps its successor redid from the checkpoint)."""
    by_step: dict[int, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in records:
        by_step[row["step"]][row["attempt"]].append(row)
    return {step: attempts[max(attempts)] for step, attempts in sorted(by_step.items())}


@pytest.fixture
def elastic_cluster(monkeypatch):
    """Head with no CPU (the driver, Train's controller) and two 1-CPU nodes. A restart that asks for a node just
    lost (the coordinator's view is up to 20 s old) times out after 10 s instead of Train's 60."""
    import ray

    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "10")
    with simulated_cluster(head_cpus=0) as cluster:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster, nodes


def test_a_run_shrinks_on_a_lost_node_and_grows_back_with_the_same_recipe(
    elastic_cluster, tiny_config, mlflow_server, tmp_path, capsys
):
    cluster, nodes = elastic_cluster
    marker = tmp_path / "trace"
    config = replace(
        tiny_config,
        ray={
            "num_workers": [1, 2],
            "elastic_resize_interval_s": 1.0,
            "shared_storage": True,
            "max_failures": 6,
            "name": "elastic",
        },
        train={"epochs": EPOCHS, "eval_every": f"{EPOCHS} epochs", "checkpoint_every_steps": 1},
        mlflow={"tracking_uri": mlflow_server, "experiment": "elastic"},
    )
    # the test hook's trace of every micro-batch, and no injected fault (its epoch is past the run's end)
    config = replace(config, train={"fault_marker": str(marker), "fault_epoch": EPOCHS + 1})
    trace = Path(f"{marker}.batches")
    events: dict[str, int] = {}

    def resize_the_cluster() -> None:
        """Remove a node while step 4 (inside epoch 2) trains; add one once the single worker is past step 6."""
        _wait_until(lambda: any(r["step"] >= 4 for r in _records(trace)), "step 4")
        cluster.remove_node(nodes[1], allow_graceful=False)
        events["removed"] = max(r["step"] for r in _records(trace))
        _wait_until(lambda: any(r["world"] == 1 and r["step"] >= 6 for r in _records(trace)), "1 worker at step 6")
        # a node joins as on a real cluster: its own `ray start` (cluster_utils adds nodes from the main thread only)
        joined.append(subprocess.Popen([RAY, "start", f"--address={cluster.address}", "--num-cpus=1", "--block"]))
        events["added"] = max(r["step"] for r in _records(trace))

    joined: list[subprocess.Popen] = []
    watcher = threading.Thread(target=resize_the_cluster, daemon=True)
    watcher.start()
    try:
        outcome = ray_train.train(config)
        watcher.join(timeout=5)
    finally:
        for node in joined:  # --block: SIGTERM stops the node's processes
            node.terminate()
            node.wait(timeout=60)
    assert set(events) == {"removed", "added"}, events

    steps = _effective(_records(trace))
    total = EPOCHS * 2
    assert sorted(steps) == list(range(1, total + 1))
    # the global batch of every step: 8 images, as 2 workers x 1 micro-batch or 1 worker x 2
    assert all(sum(len(r["ids"]) for r in rows) == 8 for rows in steps.values())
    worlds = [rows[0]["world"] for rows in steps.values()]
    assert all(len(rows) == 2 for rows in steps.values())
    changes = [(s, world) for s, world in zip(steps, worlds, strict=True) if s == 1 or world != worlds[s - 2]]
    assert [world for _, world in changes] == [2, 1, 2], changes
    # the single worker resumes from the latest checkpoint Ray Train holds, which may be a step or two behind the
    # step the node was lost in (step 4's loss can find step 3's checkpoint still being reported): it redoes those
    shrunk_at, grown_at = changes[1][0], changes[2][0]
    assert 2 <= shrunk_at <= events["removed"] + 1 and grown_at > events["added"], (shrunk_at, events)
    assert all({r["rank"] for r in steps[s]} == ({0} if worlds[s - 1] == 1 else {0, 1}) for s in steps)
    # every training image exactly once per epoch, across both resizes
    train_ids = sorted(_train_image_ids(config.data.dir))
    for epoch in range(EPOCHS):
        ids = [i for s in (2 * epoch + 1, 2 * epoch + 2) for r in steps[s] for i in r["ids"]]
        assert sorted(ids) == train_ids, epoch

    # a fixed-size run of the same recipe: 1 process x 2 accumulated micro-batches of 4 (the same global batch, the
    # same micro-batches); its learning rate, step for step, and its loss curve
    reference_marker = tmp_path / "reference"
    fixed = replace(
        config,
        train={"grad_accum_steps": 2, "fault_marker": str(reference_marker), "checkpoint_every_steps": None},
    )
    fit(fixed, tmp_path / "fixed")
    reference = _effective(_records(Path(f"{reference_marker}.batches")))
    assert [rows[0]["lr"] for rows in steps.values()] == pytest.approx([rows[0]["lr"] for rows in reference.values()])
    elastic_loss = torch.tensor([sum(r["loss"] for r in rows) / 2 for rows in steps.values()])
    fixed_loss = torch.tensor([sum(r["loss"] for r in rows) / 2 for rows in reference.values()])
    assert torch.allclose(elastic_loss, fixed_loss, rtol=1e-3, atol=1e-4), (elastic_loss - fixed_loss).abs().max()
    assert fixed_loss[-5:].mean() < fixed_loss[:5].mean()  # a curve that moved, not a flat line

    # visible: the resize lines, MLflow's world_size / grad_accumulation per step, a tag per resize, the summary
    client = MlflowClient(mlflow_server)
    run_id = outcome.run.run_id
    assert client.get_run(run_id).info.status == "FINISHED"
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "world_size"))
    values = [v for i, (_, v) in enumerate(history) if i == 0 or v != history[i - 1][1]]
    assert values == [2, 1, 2], history
    assert (shrunk_at - 1, 1) in history and (grown_at - 1, 2) in history  # logged at the step each attempt began
    accumulation = dict(sorted((m.step, m.value) for m in client.get_metric_history(run_id, "grad_accumulation")))
    assert accumulation[shrunk_at - 1] == 2 and accumulation[0] == 1
    tags = client.get_run(run_id).data.tags
    assert f"step {shrunk_at - 1}: 2 -> 1 workers" in tags["elastic.resize.1"]
    assert f"step {grown_at - 1}: 1 -> 2 workers" in tags["elastic.resize.2"]
    assert client.get_run(run_id).data.metrics["elastic_resizes"] == 2
    assert client.get_run(run_id).data.metrics["elastic_reduced_s"] > 0
    assert "elastic: 2 resize(s)" in capsys.readouterr().out


def _train_image_ids(dataset: str) -> list[int]:
    with open(os.path.join(dataset, "annotations", "train.json"), encoding="utf-8") as f:
        return [image["id"] for image in json.load(f)["images"]]
