"""Training-pipeline throughput: decoded, augmented, collated images per second per worker process.

Writes the synthetic demo dataset (JPEGs at ``--source-size``) to a temporary directory and times
the training DataLoader (read + decode + scale jitter/crop/flip/colour + normalise + collate) at
``--size`` px for each ``--workers`` count. Example::

    python benchmarks/bench_data.py --size 512 --images 96 --workers 0 1 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.data import AugmentOptions, build_dataloaders, write_synthetic_dataset  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="model input side in px (default 512)")
    parser.add_argument("--source-size", type=int, default=640, help="side of the source JPEGs (default 640)")
    parser.add_argument("--images", type=int, default=96, help="training images to time per run (default 96)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts")
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs per worker count (best is kept)")
    return parser.parse_args(argv)


def time_loader(dataset_dir: Path, args: argparse.Namespace, workers: int) -> float:
    """Best images/s over ``args.repeats`` epochs, after one untimed warm-up epoch (worker start-up)."""
    train, _ = build_dataloaders(
        dataset_dir,
        args.size,
        batch_size=args.batch_size,
        augment=AugmentOptions(scale_min=0.1, scale_max=2.0),  # the official COCO scale jitter
        num_workers=workers,
        validate=False,
    )
    best = 0.0
    for epoch in range(args.repeats + 1):
        train.sampler.set_epoch(epoch)
        start, count = time.perf_counter(), 0
        for images, _targets in train:
            count += images.shape[0]  # images: [B, 3, size, size]
        rate = count / (time.perf_counter() - start)
        best = max(best, rate) if epoch > 0 else best
    return best


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # the loader's work is per process; keep the main process from competing
    with tempfile.TemporaryDirectory() as tmp:
        dataset_dir = Path(tmp) / "bench"
        write_synthetic_dataset(dataset_dir, args.images + 2, args.source_size, seed=0, val_fraction=0.02)
        print(
            f"training pipeline at {args.size} px from {args.source_size} px JPEGs, batch {args.batch_size}, "
            f"{args.images} images per epoch, best of {args.repeats}"
        )
        print(f"{'workers':>8} {'img/s total':>12} {'img/s per worker process':>25}")
        for workers in args.workers:
            rate = time_loader(dataset_dir, args, workers)
            print(f"{workers:>8} {rate:>12.1f} {rate / max(1, workers):>25.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
