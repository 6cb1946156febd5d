"""Ray Train's per-epoch overhead against the plain loop doing the same work (target: < 10%).

Both runs train the same config for the same epochs with one worker holding one CPU thread: the plain loop in
this process (checkpoint saved every epoch), then Ray Train (checkpoint persisted to Ray storage and a report
every epoch). The per-epoch time is the mean gap between consecutive epoch ends, skipping the first epoch, so
start-up (Ray, worker group, first-call warm-up) is left out and reported separately.

    .venv/bin/python benchmarks/bench_ray_overhead.py [--epochs 4] [--images 80] [--image-size 256]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pipeline.config import PipelineConfig, load_config


def _config(args: argparse.Namespace, root: Path) -> PipelineConfig:
    return load_config(
        None,
        [
            f"data.dir={root / 'data'}",
            f"data.synth_images={args.images}",
            "data.synth_val_fraction=0.2",
            f"data.synth_size={args.image_size}",
            f"data.batch_size={args.batch_size}",
            f"model.image_size={args.image_size}",
            "model.pretrained_backbone=imagenet",
            f"train.epochs={args.epochs}",
            "train.eval_every=1",  # one report (and checkpoint) per epoch, in both runs
            "train.threads_per_worker=1",
            f"train.output_dir={root / 'outputs'}",
            "ray.num_workers=1",
            "ray.cpus_per_worker=1",
            f"ray.storage_path={root / 'ray_results'}",
            "ray.num_to_keep=2",
        ],
    )


def _per_epoch(times: list[float]) -> float:
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return statistics.mean(gaps)


def bench_plain(config: PipelineConfig, root: Path) -> tuple[float, float]:
    from pipeline.training.loop import fit

    torch.set_num_threads(1)
    ends: list[float] = []
    start = time.time()
    fit(config, root / "plain_ckpt", on_period_end=lambda trainer, metrics: ends.append(time.time()))
    return _per_epoch(ends), ends[0] - start


def bench_ray(config: PipelineConfig, root: Path) -> tuple[float, float]:
    import ray

    from pipeline.cluster.train import build_torch_trainer
    from pipeline.plan.job import absolute_paths

    config = absolute_paths(config)
    times_file = root / "ray_epoch_times.txt"
    start = time.time()
    ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False)
    try:
        build_torch_trainer(config, "bench", None, epoch_times_file=str(times_file)).fit()
    finally:
        ray.shutdown()
    ends = [float(line.split()[1]) for line in times_file.read_text().splitlines()]
    return _per_epoch(ends), ends[0] - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--images", type=int, default=80, help="demo images (80%% train, 20%% val)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    if args.epochs < 3:
        parser.error("--epochs must be >= 3 (the first epoch is warm-up)")
    from pipeline.training.inputs import ensure_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = _config(args, root)
        ensure_dataset(config.data)
        plain_epoch, plain_first = bench_plain(config, root)
        ray_epoch, ray_first = bench_ray(config, root)
    overhead = (ray_epoch - plain_epoch) / plain_epoch
    result = {
        "plain_epoch_s": round(plain_epoch, 2),
        "ray_epoch_s": round(ray_epoch, 2),
        "ray_overhead_per_epoch": round(overhead, 4),
        "plain_first_epoch_end_s": round(plain_first, 1),
        "ray_first_epoch_end_s": round(ray_first, 1),
        "epochs": args.epochs,
        "images": args.images,
        "image_size": args.image_size,
    }
    print(json.dumps(result))
    print(
        f"Ray Train per-epoch overhead: {overhead:+.1%} ({ray_epoch:.2f}s vs {plain_epoch:.2f}s per epoch; "
        f"target < 10%); start-up to the first epoch end: Ray {ray_first:.0f}s, plain {plain_first:.0f}s"
    )


if __name__ == "__main__":
    main()
