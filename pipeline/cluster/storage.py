"""Checks that a run's storage and tracking store are reachable from every node of the Ray cluster it runs on.

On one node anything local works. Once workers may run on other nodes (more than one alive node, or an autoscaler
that may add some), Ray Train's checkpoints must go to a URI every node reaches (s3://, gs://, ...) or to a
filesystem mounted at the same path on every node, declared with `ray.shared_storage: true` and verified here by a
probe; and MLflow must be a server or a database every node reaches, never a file on the driver's disk.
Called by `pipeline.cluster.train` once Ray is connected, before any training starts.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from pipeline.config import ConfigError, PipelineConfig
from pipeline.uri import is_uri

REMOTE_STORE_HINT = (
    "s3://BUCKET/PATH, gs://BUCKET/PATH, or a filesystem mounted on every node with ray.shared_storage=true"
)
TRACKING_HINT = (
    "an MLflow tracking server (http://HOST:5000, started with `mlflow server --host 0.0.0.0 ...`) "
    "or a database every node reaches (postgresql://..., mysql://...)"
)
PROBE_TIMEOUT_S = 60.0


def is_local_path(uri: str) -> bool:
    """A path on this machine's disk: no scheme, or file:// / local://."""
    return not is_uri(uri) or uri.startswith(("file://", "local://"))


def is_local_tracking_store(uri: str) -> bool:
    """SQLite files and plain file stores live on the driver's disk; servers and database URIs do not."""
    return uri.startswith(("sqlite:", "file:")) or not is_uri(uri)


def alive_nodes() -> list[dict]:
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def autoscaler_max_resources() -> dict[str, float]:
    """What an autoscaler may grow the cluster to (its node types x max workers); {} without an autoscaler."""
    try:
        from ray._private.state import state  # private: pinned with ray==2.60.* in pyproject.toml

        return dict(state.get_max_resources_from_cluster_config() or {})
    except Exception:  # no autoscaler config, or another Ray layout: nothing to add
        return {}


def reachable_resources() -> dict[str, float]:
    """The cluster's resources now, or what its autoscaler may add, whichever is more (per resource)."""
    import ray

    have = dict(ray.cluster_resources())
    for key, value in autoscaler_max_resources().items():
        have[key] = max(have.get(key, 0), value)
    return have


def may_span_nodes() -> bool:
    """More than one node is alive, or an autoscaler may add worker nodes later."""
    import ray

    if len(alive_nodes()) > 1:
        return True
    head_cpus = ray.cluster_resources().get("CPU", 0)
    return autoscaler_max_resources().get("CPU", 0) > head_cpus


def check_shared_storage(config: PipelineConfig, tracking_uri: str) -> None:
    """Refuse node-local storage or tracking on a multi-node cluster; probe a declared shared filesystem and the
    dataset from every alive node."""
    from pipeline.data.layout import annotation_path

    if not may_span_nodes():
        return
    nodes = alive_nodes()
    if is_local_tracking_store(tracking_uri):
        raise ConfigError(
            f"MLflow tracking URI {tracking_uri!r} (mlflow.tracking_uri / MLFLOW_TRACKING_URI) is a store on one "
            f"node's disk, but this Ray cluster spans {len(nodes)} node(s) (or may autoscale) and rank 0 may run on "
            f"another node: use {TRACKING_HINT}"
        )
    storage = config.ray.storage_path
    shared_dir = None
    if is_local_path(storage):
        if not config.ray.shared_storage:
            raise ConfigError(
                f"ray.storage_path={storage!r} is a local path, but this Ray cluster spans {len(nodes)} node(s) (or "
                f"may autoscale): checkpoints written on one node are not seen by the others. Use {REMOTE_STORE_HINT}"
            )
        shared_dir = Path(storage.removeprefix("file://").removeprefix("local://"))
    probe_nodes(nodes, shared_dir, annotation_path(config.data.dir, "train"))


def _node_view(marker: str | None, token: str, data_file: str) -> list[str]:
    """On one node: what it cannot see of the driver's marker file and of the dataset (empty when all is well). A
    dataset in a bucket is read with this node's credentials."""
    from pipeline.data import storage

    problems = []
    if marker is not None:
        try:
            if Path(marker).read_text(encoding="utf-8") != token:
                problems.append(f"storage: {marker} holds another content (a different filesystem?)")
        except OSError as e:
            problems.append(f"storage: cannot read the probe file {marker} ({e.strerror or e})")
    try:
        if not storage.is_file(data_file):
            problems.append(f"data: no {data_file}")
    except storage.StorageError as e:
        problems.append(f"data: {e}")
    return problems


def probe_nodes(nodes: list[dict], shared_dir: Path | None, data_file: Path) -> None:
    """Run `_node_view` in a task pinned to each alive node: a marker file written here under `shared_dir` must read
    back the same there, and the dataset must be there. Nodes an autoscaler adds later cannot be probed."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = None
    token = uuid.uuid4().hex
    if shared_dir is not None:
        try:
            (shared_dir / "_pipeline").mkdir(parents=True, exist_ok=True)
            marker = shared_dir / "_pipeline" / f".shared-probe-{token}"
            marker.write_text(token, encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"ray.storage_path={str(shared_dir)!r}: cannot write there ({e.strerror})") from None
    try:
        # num_cpus=0: the probe must not wait behind (or block) training workers holding the CPUs
        view = ray.remote(num_cpus=0, max_retries=0)(_node_view)
        refs = [
            view.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                str(marker) if marker else None, token, str(data_file)
            )
            for n in nodes
        ]
        try:
            results = ray.get(refs, timeout=PROBE_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise ConfigError(
                f"the storage/dataset probe did not finish on every node in {PROBE_TIMEOUT_S:.0f} s"
            ) from None
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)
    _raise_for(nodes, results, shared_dir)


def _raise_for(nodes: list[dict], results: list[list[str]], shared_dir: Path | None) -> None:
    lines = [
        f"node {n['NodeID'][:12]} ({n.get('NodeManagerAddress', '?')}): {problem}"
        for n, problems in zip(nodes, results, strict=True)
        for problem in problems
    ]
    if not lines:
        return
    fixes = []
    if any("storage:" in line for line in lines):
        fixes.append(
            f"ray.shared_storage=true but ray.storage_path={str(shared_dir)!r} is not the same filesystem on every "
            f"node: mount it at the same path everywhere, or use {REMOTE_STORE_HINT}"
        )
    if any("data:" in line for line in lines):
        fixes.append(
            "data.dir must be readable from every node: a bucket (s3://..., gs://...) with credentials on every node, "
            "a shared mount, or a copy at the same path on each node"
        )
    raise ConfigError("; ".join(fixes) + "\n  " + "\n  ".join(lines))
