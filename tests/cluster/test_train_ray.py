"""End to end through Ray Train (2 DDP workers on CPU, gloo) with MLflow tracking: logging, fault tolerance,
resume; the first run is tracked by a real `mlflow server`. The first and the resumed runs train on a dataset in
a bucket (the tests' S3 server), with and without the per-node cache."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.cli import train as train_cli
from pipeline.cluster import train as ray_train
from pipeline.config import replace
from pipeline.data import dataset_fingerprint
from pipeline.training.checkpoint import load_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("s3_server", "local_ray")]  # workers inherit the S3 env


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for info in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, info.path) if info.is_dir else {info.path}
    return out


def test_two_worker_ddp_run_logs_params_metrics_and_artifacts(
    tiny_config, mlflow_server, tiny_bucket_dataset, tiny_dataset, tmp_path
):
    """Tracked by a real `mlflow server` (HTTP, proxied artifacts, its model registry), as on a cluster; the data
    streams from a bucket through the workers' shared node cache. The same run again with `data.engine: ray`
    trains the same: its batches are equal tensor for tensor (the engine test below)."""
    cache = tmp_path / "node_cache"
    config = replace(
        tiny_config,
        data={"dir": tiny_bucket_dataset, "cache_dir": str(cache), "ray_cpus_per_task": 0.5},
        ray={"cpus_per_worker": 0.5},  # leaves the CPU that `data.engine: ray` needs at the end
        mlflow={"tracking_uri": mlflow_server, "experiment": "ddp-from-a-bucket"},  # an experiment of its own
    )
    outcome = ray_train.train(config)
    assert outcome.run.tracking_uri == mlflow_server
    assert outcome.run.url().startswith(mlflow_server + "/#/experiments/")
    client = MlflowClient(mlflow_server)
    run = client.get_run(outcome.run.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["train.epochs"] == "2" and params["ray.num_workers"] == "2" and params["model.variant"] == "lite0"
    assert params["data.dir"] == tiny_bucket_dataset
    # the dataset by reference: each split's source, fingerprint (the same as the local copy's) and sizes
    inputs = {
        tag.value: dataset
        for dataset_input in run.inputs.dataset_inputs
        for tag in dataset_input.tags
        if tag.key == "mlflow.data.context"
        for dataset in [dataset_input.dataset]
    }
    assert sorted(inputs) == ["training", "validation"]
    for context, split, images in (("training", "train", 16), ("validation", "val", 8)):
        dataset = inputs[context]
        assert (dataset.name, dataset.digest) == (f"tiny-{split}", dataset_fingerprint(tiny_dataset, split))
        assert json.loads(dataset.source) == {"uri": tiny_bucket_dataset} and dataset.source_type == "s3"
        assert json.loads(dataset.profile)["images"] == images
    # both workers (one node) filled one cache: each of the 24 objects once, byte for byte
    cached = sorted(p.read_bytes() for p in cache.rglob("*") if p.is_file())
    assert cached == sorted(p.read_bytes() for p in (tiny_dataset / "images").iterdir())
    keys = ("train_loss", "train_class_loss", "train_box_loss", "lr", "images_per_s", "data_wait_share")
    keys += ("val_AP", "val_AP50")
    for key in keys:
        assert _steps(client, run.info.run_id, key) == [2, 4], key  # MLflow step = optimizer step: 2 per epoch
    assert all(0 <= m.value < 1 for m in client.get_metric_history(run.info.run_id, "data_wait_share"))
    # both DDP ranks trained on their shard: the all-reduced image count is the whole training split
    assert [m.value for m in client.get_metric_history(run.info.run_id, "train_images")] == [16, 16]
    assert "best_val_AP50" in run.data.metrics
    artifacts = _artifacts(client, run.info.run_id)
    for name in (
        "config.yaml",
        "label_map.json",
        "best_checkpoint/checkpoint.pt",
        "best_checkpoint/label_map.json",
        "curves.png",
        "pr_curve.png",
        "val_grid.png",
    ):
        assert name in artifacts, (name, artifacts)
    local = Path(client.download_artifacts(run.info.run_id, "best_checkpoint"))
    best = load_checkpoint(local)
    assert best.label_map["names"] == ["circle", "square", "triangle"] and best.optimizer is None
    assert (Path(outcome.run_dir) / "step_0000004").is_dir()  # Ray kept the last checkpoint (end of epoch 2)

    # `train --register NAME`: the best checkpoint becomes version 1, champion, linked to this run.
    args = argparse.Namespace(register="shapes", force_champion=False, no_onnx=True)  # ONNX: tests/registry
    registration = train_cli._register(args, config, outcome)
    assert (registration.version, registration.aliases) == ("1", ("champion",))
    registry = MlflowClient(mlflow_server, registry_uri=mlflow_server)  # not MLflow's global
    version = registry.get_model_version_by_alias("shapes", "champion")
    # MLflow 3.17 does not always fill ModelVersion.run_id for a models:/ source; the registry's tag does.
    assert version.tags["run_id"] == run.info.run_id
    assert float(version.tags["val_AP50"]) == pytest.approx(best.chosen("best").metrics["val_AP50"], abs=1e-6)

    # the same run with the batches prepared by Ray Data tasks: per epoch the same image count, losses and val AP
    ray_engine = ray_train.train(replace(config, data={"engine": "ray"}))
    history = {}
    for run_id in (run.info.run_id, ray_engine.run.run_id):
        for key in ("train_images", "train_loss", "val_AP", "val_AP50"):
            metrics = client.get_metric_history(run_id, key)
            history.setdefault(key, []).append(sorted((m.step, m.value) for m in metrics))
    assert history.pop("train_images") == [[(2, 16), (4, 16)]] * 2
    for key, (dataloader, ray_data) in history.items():
        assert ray_data == dataloader, key  # bit for bit: the same tensors, the same float summation order


def test_crashes_at_random_steps_each_cost_at_most_the_checkpoint_interval_and_a_failed_run_resumes(
    tiny_config, tiny_bucket_dataset, tmp_path
):
    """Rank 0 dies right after 3 optimizer steps drawn at random (seeded: 6, 8, 10), mid-epoch or at an epoch's end,
    before that step's checkpoint: each restart resumes from the last step checkpoint (every 3 steps), so at most 3
    steps are redone (here 3, 2 and 1). Ray restarts the first 2 (`ray.max_failures: 2`); the 3rd fails the run
    (MLflow: FAILED), which `resume` continues in the same MLflow run to its last step. MLflow then holds every
    step's metrics exactly once, and Ray kept only the last checkpoint (num_to_keep 1). The data streams from a
    bucket without a cache: every image is read from the store, in every attempt."""
    import random

    marker = tmp_path / "fault"
    faults = sorted(random.Random(17).sample(range(2, 12), 3))  # of steps 1-12 (3 epochs of 4)
    config = replace(
        tiny_config,
        data={"dir": tiny_bucket_dataset, "batch_size": 2},  # 16 images, 2 workers x 2: 4 steps per epoch
        train={
            "epochs": 3,
            "eval_every": "6 steps",
            "checkpoint_every_steps": 3,
            "log_every_seconds": 0.001,  # a step metric after every step
            "fault_marker": str(marker),
            "fault_steps": faults,
        },
        ray={"max_failures": 2, "cpus_per_worker": 0.5},
    )
    with pytest.raises(ray_train.TrainingJobError, match="resume with --resume"):
        ray_train.train(config)
    client = MlflowClient(ray_train.tracking.resolve_tracking_uri(config.mlflow.tracking_uri))
    [failed] = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert failed.info.status == "FAILED"

    outcome = ray_train.train(config, resume=True)
    assert outcome.run.run_id == failed.info.run_id  # same Ray run (storage_path + name), same MLflow run
    assert outcome.last_metrics["step"] == 12 and outcome.last_metrics["epoch"] == 3
    assert all(Path(f"{marker}.step{step}").exists() for step in faults)
    starts = [int(line) for line in Path(f"{marker}.starts").read_text().split()]  # each attempt's first step
    assert len(starts) == 4 and starts[0] == 0 and outcome.last_metrics["resumed_from_step"] == starts[-1]
    lost = [fault - start for fault, start in zip(faults, starts[1:], strict=True)]
    assert lost == [3, 2, 1], (faults, starts)  # each back to the last multiple of 3: never more than 3 redone
    assert sorted(m.step for m in client.get_metric_history(outcome.run.run_id, "step_lr")) == list(range(1, 13))
    assert _steps(client, outcome.run.run_id, "train_loss") == [6, 12]
    assert client.get_run(outcome.run.run_id).info.status == "FINISHED"
    assert [p.name for p in Path(outcome.run_dir).glob("step_*")] == ["step_0000012"]


def _ids(batches) -> list[int]:
    return [target["image_id"] for _, targets in batches for target in targets]


def test_ray_data_engine_gives_each_rank_the_dataloaders_images_and_resumes_exactly(tiny_dataset):
    """`data.engine: ray`: per rank and epoch the same batches as the DataLoader engine, tensor for tensor (padded
    train shards augmented by the same per-(epoch, image) seeds, unpadded validation): the same epoch twice is the
    same, another epoch differs, and a pass resumed 4 images in equals the rest of the straight one."""
    import torch

    from pipeline.data import build_dataloaders

    def loaders(engine: str, rank: int):
        options = {"batch_size": 4, "rank": rank, "world_size": 2, "validate": False, "seed": 3}
        return build_dataloaders(tiny_dataset, 128, engine=engine, ray_cpus_per_task=0.5, **options)

    val_ids = []
    for rank in (0, 1):
        ray_data, torch_data = loaders("ray", rank), loaders("torch", rank)
        for epoch in (1, 2):
            ray_data.train.sampler.set_epoch(epoch)
            torch_data.train.sampler.set_epoch(epoch)
            train = list(ray_data.train)
            assert _ids(train) == _ids(torch_data.train) and len(_ids(train)) == 8
            for (images, _), (expected, _) in zip(train, torch_data.train, strict=True):
                assert torch.equal(images, expected)  # the same augmentation: [4, 3, 128, 128]
        val = list(ray_data.val)
        assert _ids(val) == _ids(torch_data.val)
        for (images, _), (expected, _) in zip(val, torch_data.val, strict=True):
            assert torch.equal(images, expected)
        val_ids += _ids(val)
    assert sorted(val_ids) == sorted(set(val_ids)) and len(val_ids) == 8  # each val image once across ranks

    train = loaders("ray", 0).train
    train.sampler.set_epoch(2)
    straight = [image for images, _ in train for image in images]  # [3, 128, 128] each
    assert all(torch.equal(a, b) for a, b in zip(straight, [i for images, _ in train for i in images], strict=True))
    train.sampler.skip(4)
    resumed = [image for images, _ in train for image in images]
    assert len(resumed) == 4 and all(torch.equal(a, b) for a, b in zip(resumed, straight[4:], strict=True))
    train.sampler.set_epoch(3)
    train.sampler.skip(0)
    other_epoch = {t["image_id"]: i for images, targets in train for i, t in zip(images, targets, strict=True)}
    train.sampler.set_epoch(2)
    both = [(k, image_id) for k, image_id in enumerate(_ids(train)) if image_id in other_epoch]  # in both shards
    assert both and any(not torch.equal(straight[k], other_epoch[image_id]) for k, image_id in both)


def test_ray_data_engine_needs_a_cpu_the_workers_leave_free(tiny_config):
    """Two 1-CPU workers on this 2-CPU Ray leave nothing for the Ray Data tasks: refused before anything starts,
    instead of tasks waiting forever behind the workers."""
    from pipeline.cluster.runtime import init_ray
    from pipeline.config import ConfigError

    config = replace(tiny_config, data={"engine": "ray", "ray_cpus_per_task": 0.5}, ray={"cpus_per_worker": 1})
    with pytest.raises(ConfigError, match=r"data.ray_cpus_per_task=0.5 does not fit .*data.engine: ray needs CPUs"):
        init_ray(config, "sqlite:///unused.db")
    init_ray(replace(config, ray={"cpus_per_worker": 0.5}), "sqlite:///unused.db")  # 2 x 0.5 + 0.5 fits


def test_rank_zero_sees_the_drivers_stop_request_without_blocking():
    import ray

    from pipeline.cluster.interrupts import WorkerInterrupts, start_stop_flag

    flag = start_stop_flag()
    poll = WorkerInterrupts(flag)
    assert poll() is None  # nothing asked: no wait
    ray.get(flag.request.remote())
    ray.wait([poll._stop], timeout=30)  # the request reaches the pending wait() (an event, not a sleep)
    assert poll() == "stop"
    ray.kill(flag)


def test_ray_data_engine_trains_and_evaluates_the_same_windows_as_the_dataloader(tiny_dataset):
    """`data.tiling` with `data.engine: ray`: the same training windows (augmented alike) and the same evaluation
    windows, with the window each target came from."""
    import torch

    from pipeline.config.tiling import TilingSpec
    from pipeline.data import build_dataloaders

    options = {"batch_size": 4, "validate": False, "seed": 3, "tiling": TilingSpec(96, 0.25)}
    ray_data = build_dataloaders(tiny_dataset, 96, engine="ray", ray_cpus_per_task=0.5, **options)
    torch_data = build_dataloaders(tiny_dataset, 96, engine="torch", **options)
    assert len(torch_data.train.dataset) > len(torch_data.train.dataset.images)  # items are windows
    ray_data.train.sampler.set_epoch(1)
    torch_data.train.sampler.set_epoch(1)
    for split in ("train", "val"):
        got, expected = list(getattr(ray_data, split)), list(getattr(torch_data, split))
        assert len(got) == len(expected) > 0
        for (images, targets), (want, want_targets) in zip(got, expected, strict=True):
            assert torch.equal(images, want)  # [4, 3, 96, 96]
            assert [tuple(t["window"]) for t in targets] == [tuple(t["window"]) for t in want_targets]
            assert [bool(t["whole"]) for t in targets] == [bool(t["whole"]) for t in want_targets]
