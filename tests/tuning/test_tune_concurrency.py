"""How many trials run at once: what the cluster's CPUs/GPUs and trial-driver slots fit, never zero silently."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipeline.cluster import storage as cluster_storage
from pipeline.config import ConfigError, load_config
from pipeline.tuning.runner import _concurrency


def concurrency(monkeypatch, resources: dict, *overrides: str, max_concurrent: int | None = None) -> int:
    monkeypatch.setattr(cluster_storage, "reachable_resources", lambda: dict(resources))
    return _concurrency(load_config(None, list(overrides)), SimpleNamespace(max_concurrent_trials=max_concurrent))


@pytest.mark.parametrize(
    ("resources", "overrides", "max_concurrent", "expected"),
    [
        ({"CPU": 2, "train_driver": 2}, ["ray.num_workers=1"], None, 2),
        ({"CPU": 2, "train_driver": 2}, ["ray.num_workers=2"], None, 1),
        ({"CPU": 2, "train_driver": 2}, ["ray.num_workers=1"], 1, 1),
        ({"CPU": 64, "train_driver": 4}, ["ray.num_workers=1"], None, 4),  # driver slots cap it
        ({"CPU": 64, "GPU": 8, "train_driver": 8}, ["ray.num_workers=4", "ray.use_gpu=true"], None, 2),
        # half a GPU per worker: two one-worker trials side by side on one GPU
        (
            {"CPU": 16, "GPU": 1, "train_driver": 4},
            ["ray.num_workers=1", "ray.use_gpu=true", "ray.gpus_per_worker=0.5"],
            None,
            2,
        ),
    ],
)
def test_trials_at_once(monkeypatch, resources, overrides, max_concurrent, expected):
    assert concurrency(monkeypatch, resources, *overrides, max_concurrent=max_concurrent) == expected


def test_a_cluster_without_driver_slots_is_refused(monkeypatch):
    with pytest.raises(ConfigError, match="no 'train_driver' resource"):
        concurrency(monkeypatch, {"CPU": 8})


def test_a_trial_that_cannot_fit_is_refused_instead_of_waiting_forever(monkeypatch):
    with pytest.raises(ConfigError, match=r"one trial needs 4 worker\(s\) x 1.0 CPU \+ 1 GPU"):
        concurrency(monkeypatch, {"CPU": 64, "GPU": 2, "train_driver": 4}, "ray.num_workers=4", "ray.use_gpu=true")
