"""`ray:` and `mlflow:`: the cluster a job runs on and the tracking store it records to."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.config.checks import check, choice


@dataclass(frozen=True)
class RayConfig:
    """Ray Train scaling, storage and fault tolerance."""

    # a number, or [MIN, MAX]: elastic, through Ray Train's controller (starts once MIN fit, grows to MAX as
    # resources appear, goes on with fewer down to MIN); the global batch stays MAX's (docs/SCALING.md)
    num_workers: int | tuple[int, ...] = 2
    elastic_resize_interval_s: float = 60.0  # elastic: how often Ray Train looks for room to grow
    use_gpu: bool = False
    # on a GPU worker its loader processes decode and augment (data.loader_workers auto = this - 1): docs/SCALING.md
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # with use_gpu; a fraction (0.5) packs several trials' workers on one GPU
    address: str | None = None  # null: connect to RAY_ADDRESS or start a local Ray
    storage_path: str = "ray_results"  # made absolute in the driver; shared storage on a cluster
    # storage_path is a filesystem mounted at the same path on every node (NFS, EFS, Filestore...): needed for a
    # local-looking path on a multi-node cluster; verified by a probe when the run starts
    shared_storage: bool = False
    name: str | None = None  # run name; null = a new timestamped one (or the latest with --resume)
    max_failures: int = 1  # worker-group restarts; each resumes from the last epoch checkpoint
    # restarts after a node of the run was preempted (Ray's drain: a spot reclaim), counted apart from failures; each
    # resumes from the checkpoint the notice triggered (-1 = unlimited)
    max_preemptions: int = -1
    num_to_keep: int = 2  # epoch checkpoints kept by Ray (the best one is kept separately for MLflow)
    placement_strategy: str = "PACK"

    def __post_init__(self) -> None:
        if isinstance(self.num_workers, tuple):
            check(len(self.num_workers) == 2, "ray.num_workers", list(self.num_workers), "a range is [MIN, MAX]")
            low, high = self.num_workers
            check(1 <= low <= high, "ray.num_workers", list(self.num_workers), "needs 1 <= MIN <= MAX")
        check(self.min_workers >= 1, "ray.num_workers", self.num_workers, "must be >= 1")
        check(
            self.elastic_resize_interval_s > 0,
            "ray.elastic_resize_interval_s",
            self.elastic_resize_interval_s,
            "must be > 0 seconds",
        )
        check(self.cpus_per_worker > 0, "ray.cpus_per_worker", self.cpus_per_worker, "must be > 0")
        check(
            0 < self.gpus_per_worker <= 1 or float(self.gpus_per_worker).is_integer(),
            "ray.gpus_per_worker",
            self.gpus_per_worker,
            "must be a fraction in (0, 1] or a whole number",
        )
        check(self.max_failures >= -1, "ray.max_failures", self.max_failures, "must be >= -1 (-1 = unlimited)")
        check(self.max_preemptions >= -1, "ray.max_preemptions", self.max_preemptions, "must be >= -1 (-1 = unlimited)")
        check(self.num_to_keep >= 1, "ray.num_to_keep", self.num_to_keep, "must be >= 1")
        choice("ray.placement_strategy", self.placement_strategy, ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"))
        check(bool(self.storage_path), "ray.storage_path", self.storage_path, "must be a non-empty path or URI")

    @property
    def min_workers(self) -> int:
        return self.num_workers[0] if isinstance(self.num_workers, tuple) else self.num_workers

    @property
    def max_workers(self) -> int:
        """The largest worker group: its global batch is the run's at every size."""
        return self.num_workers[1] if isinstance(self.num_workers, tuple) else self.num_workers

    @property
    def elastic(self) -> bool:
        return self.min_workers < self.max_workers

    def describe_workers(self) -> str:
        return f"{self.min_workers}-{self.max_workers} (elastic)" if self.elastic else str(self.max_workers)

    def cluster_address(self) -> str | None:
        """The Ray a job connects to: `ray.address`, else RAY_ADDRESS; None starts a local one (the one rule: the
        run header and `init_ray` both ask here)."""
        return self.address or os.environ.get("RAY_ADDRESS") or None


@dataclass(frozen=True)
class MlflowConfig:
    """Where and how the run is tracked."""

    tracking_uri: str | None = None  # null: MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db
    experiment: str = "efficientdet"
    run_name: str | None = None
    log_checkpoint: bool = True  # log the best checkpoint as an artifact
    grid_images: int = 8  # validation images in the predicted-vs-true grid
    score_threshold: float = 0.3  # for drawing predicted boxes in the grid

    def __post_init__(self) -> None:
        check(bool(self.experiment), "mlflow.experiment", self.experiment, "must be a non-empty name")
        check(self.grid_images >= 0, "mlflow.grid_images", self.grid_images, "must be >= 0")
        check(0 <= self.score_threshold <= 1, "mlflow.score_threshold", self.score_threshold, "must be in [0, 1]")
