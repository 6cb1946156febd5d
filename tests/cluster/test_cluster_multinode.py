"""A simulated two-node Ray cluster (two raylets on this machine, 1 CPU each): 2-worker DDP training with one worker
per node, and the refusal of node-local storage or tracking on a multi-node run before any training starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.cluster import storage as cluster_storage
from pipeline.cluster import train as ray_train
from pipeline.config import ConfigError, replace

from .conftest import simulated_cluster

# the S3 server first: the two fake nodes started after it inherit its endpoint and credentials, as real nodes would
# hold their own
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("s3_server")]


@pytest.fixture(scope="module")
def two_nodes():
    """Head + one added node, 1 CPU each."""
    import ray

    with simulated_cluster(head_cpus=1) as cluster:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster


def train_worker_nodes() -> list[str]:
    """Node ids of every Ray Train worker actor of this cluster, dead ones included (Ray's state API)."""
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "RayTrainWorker")], limit=1000, raise_on_missing_output=False)
    return [actor.node_id for actor in actors]


def test_local_tracking_store_is_refused_before_training(two_nodes, tiny_config):
    with pytest.raises(ConfigError, match=r"MLflow tracking URI 'sqlite:///.*' .* spans 2 node\(s\)"):
        ray_train.train(tiny_config)
    assert train_worker_nodes() == []  # refused before any worker started


def test_node_local_storage_is_refused_and_shared_storage_is_probed(s3_server, two_nodes, tiny_config, tmp_path):
    server = "http://127.0.0.1:5000"  # the check only reads the URI's kind; nothing contacts it
    with pytest.raises(ConfigError, match=r"ray.storage_path='.*ray_results' is a local path.* s3://"):
        cluster_storage.check_shared_storage(tiny_config, server)
    file_uri = replace(tiny_config, ray={"storage_path": f"file://{tmp_path}/results"})
    with pytest.raises(ConfigError, match="is a local path"):
        cluster_storage.check_shared_storage(file_uri, server)

    # remote storage needs no probe of its own; a declared shared filesystem is probed from both nodes
    cluster_storage.check_shared_storage(replace(tiny_config, ray={"storage_path": "s3://bucket/effdet"}), server)
    shared = replace(tiny_config, ray={"shared_storage": True})
    cluster_storage.check_shared_storage(shared, server)
    assert not list((tmp_path / "ray_results" / "_pipeline").glob(".shared-probe-*"))  # the marker is cleaned up

    # a dataset that a node cannot see: every node reports it, by node
    missing = replace(shared, data={"dir": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="data.dir must be readable from every node") as refused:
        cluster_storage.check_shared_storage(missing, server)
    assert str(refused.value).count("no " + str(tmp_path / "nowhere")) == 2
    # a dataset in a bucket: every node reads it with its own credentials (here the session's S3 server's)
    bucket_dataset = s3_server.upload_dir(Path(tiny_config.data.dir), "cluster-data", "tiny")
    cluster_storage.check_shared_storage(replace(shared, data={"dir": bucket_dataset}), server)
    elsewhere = replace(shared, data={"dir": bucket_dataset + "-moved"})
    with pytest.raises(ConfigError, match="a bucket") as refused:
        cluster_storage.check_shared_storage(elsewhere, server)
    assert str(refused.value).count(f"data: no {bucket_dataset}-moved/annotations/train.json") == 2


def test_a_node_that_sees_another_filesystem_is_named(tmp_path):
    marker = tmp_path / "probe"
    marker.write_text("other")
    assert cluster_storage._node_view(str(marker), "token", str(tmp_path / "train.json")) == [
        f"storage: {marker} holds another content (a different filesystem?)",
        f"data: no {tmp_path / 'train.json'}",
    ]
    nodes = [{"NodeID": "a" * 56, "NodeManagerAddress": "10.0.0.7"}]
    with pytest.raises(ConfigError, match=r"not the same filesystem on every node.*\n  node aaaaaaaaaaaa \(10.0.0.7\)"):
        cluster_storage._raise_for(nodes, [["storage: cannot read the probe file"]], tmp_path)


def test_two_worker_ddp_runs_one_worker_per_node(two_nodes, tiny_config, mlflow_server):
    import ray

    config = replace(
        tiny_config,
        ray={"placement_strategy": "SPREAD", "shared_storage": True},
        mlflow={"tracking_uri": mlflow_server, "experiment": "two-nodes"},  # an experiment of its own
        train={"epochs": 1},
    )
    outcome = ray_train.train(config)
    run = MlflowClient(mlflow_server).get_run(outcome.run.run_id)
    assert run.info.status == "FINISHED"
    # both ranks trained on their shard of the 16 training images
    assert MlflowClient(mlflow_server).get_metric_history(run.info.run_id, "train_images")[0].value == 16

    worker_nodes = train_worker_nodes()
    assert len(worker_nodes) == 2, worker_nodes
    assert set(worker_nodes) == {node["NodeID"] for node in ray.nodes() if node["Alive"]}
