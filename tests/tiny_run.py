"""The tiny training run shared by the training, tracking and cluster tests: its settings and fixtures (imported
into each directory's conftest.py), a local Ray and the tiny dataset in a bucket."""

from __future__ import annotations

from pathlib import Path

import pytest
from ports import free_port

from pipeline.config import PipelineConfig, load_config

TINY_OVERRIDES = [
    "model.variant=lite0",
    "model.image_size=128",
    "model.fpn_channels=32",
    "model.fpn_repeats=1",
    "model.head_repeats=1",
    "model.pretrained_backbone=null",  # weights do not matter for plumbing tests; skipping them is faster
    "data.batch_size=4",
    "data.synth_images=24",
    "data.synth_size=128",
    "data.synth_val_fraction=0.33",  # 16 train, 8 val
    "data.generate_if_missing=false",
    "optim.lr=0.02",
    "train.epochs=2",
    "train.eval_every=1",  # one evaluation, report and checkpoint per epoch (2 optimizer steps: 16 images, 2 x 4)
    "ray.num_workers=2",
    "ray.num_to_keep=1",
    "mlflow.grid_images=2",
]


def tiny_overrides(tiny_dataset: Path, out: Path, tracking_uri: str) -> list[str]:
    """A tiny 2-worker run whose every output (Ray storage, outputs) lives under `out`."""
    return [
        *TINY_OVERRIDES,
        f"data.dir={tiny_dataset}",
        f"ray.storage_path={out / 'ray_results'}",
        f"train.output_dir={out / 'outputs'}",
        f"mlflow.tracking_uri={tracking_uri}",
        "mlflow.experiment=tests",
    ]


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One intra-op thread: on a 2-core machine shared with other processes, OpenMP threads spinning against
    each other make a tiny training step take seconds instead of milliseconds (Ray workers do the same)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def unused_port() -> int:
    """A local port nothing listens on (for an unreachable tracking server)."""
    return free_port()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """16 train + 8 val images of 128 px, written once per session."""
    from pipeline.data import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "tiny", num_images=24, size=128, val_fraction=0.33)


@pytest.fixture
def tiny_config(tiny_dataset, tmp_path) -> PipelineConfig:
    """A config for a tiny run whose every output (Ray storage, MLflow store, outputs) lives in tmp_path."""
    return load_config(None, tiny_overrides(tiny_dataset, tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}"))


@pytest.fixture(scope="module")
def local_ray():
    """A local 2-CPU Ray for one test module, shut down afterwards."""
    import ray

    # a Ray of its own (address local): never another test process's `ray start --head` (pytest -n 2)
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=free_port(),
        log_to_driver=False,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_bucket_dataset(s3_server, tiny_dataset) -> str:
    """`tiny_dataset` uploaded to the tests' S3 server: `s3://training-data/tiny`."""
    return s3_server.upload_dir(tiny_dataset, "training-data", "tiny")


def without_auto(config):
    """`config` with its `auto` values set to the official ones (null; the `default` augmentation): for tests that
    build a trainer directly, with no dataset to fit them to."""
    from pipeline.config import AUTO, replace
    from pipeline.config.model import AUTO_KEYS

    model = {key: None for key in AUTO_KEYS if getattr(config.model, key) == AUTO}
    data = {"augment": "default"} if config.data.augment == AUTO else {}
    if config.data.tiling == AUTO:
        data["tiling"] = "off"
    return replace(config, model=model, data=data)
