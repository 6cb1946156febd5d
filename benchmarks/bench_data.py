"""Training-pipeline throughput: decoded, augmented, collated images per second per worker process.

First the decoders alone, one core, on a JPEG of each ``--decode-sides`` (PIL, OpenCV, torchvision.io, and
simplejpeg at full size and at the size a model of that side needs, which is what the loader uses). Then the
training DataLoader (read + decode + scale jitter/crop/flip/colour + normalise + collate) on the synthetic demo
dataset (JPEGs at ``--source-size``) at ``--size`` px for each ``--workers`` count and each ``--stores``: local
disk, a bucket on a loopback S3 server (moto's, a test dependency: its Python HTTP server, on the same cores, is
slower than a real store), and that bucket through the per-node cache (`data.cache_dir`: the untimed first epoch
fills it). ``--engines torch ray`` also times `data.engine: ray` (Ray Data tasks on a local Ray of this machine's
CPUs, one CPU each, feeding one consumer; "workers" does not apply) and its per-epoch start-up: the wait for the
first batch of an epoch, against the DataLoader's. Example::

    python benchmarks/bench_data.py --size 512 --workers 0 1 2 --stores local s3 s3-cache --engines torch ray
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.data import AugmentOptions, build_dataloaders, write_synthetic_dataset  # noqa: E402

STORES = ("local", "s3", "s3-cache")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="model input side in px (default 512)")
    parser.add_argument("--source-size", type=int, default=640, help="side of the source JPEGs (default 640)")
    parser.add_argument("--images", type=int, default=96, help="training images to time per run (default 96)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts")
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs per worker count (best is kept)")
    parser.add_argument("--pil", action="store_true", help="time the loader with PIL decoding (simplejpeg off)")
    parser.add_argument("--decode-sides", type=int, nargs="*", default=[512, 1024, 4000], help="JPEG sides to decode")
    parser.add_argument(
        "--stores", nargs="+", default=["local"], choices=STORES, help="where the dataset is read from (default local)"
    )
    parser.add_argument("--engines", nargs="+", default=["torch"], choices=("torch", "ray"), help="data.engine values")
    return parser.parse_args(argv)


def time_loader(
    dataset_dir: Path | str, args: argparse.Namespace, workers: int, cache_dir: str | None = None, engine: str = "torch"
) -> tuple[float, float]:
    """(best images/s, the first batch's wait in that epoch) over ``args.repeats`` epochs, after one untimed warm-up
    epoch (worker start-up, cache fill)."""
    train, _ = build_dataloaders(
        dataset_dir,
        args.size,
        cache_dir=cache_dir,
        engine=engine,
        batch_size=args.batch_size,
        augment=AugmentOptions(scale_min=0.1, scale_max=2.0),  # the official COCO scale jitter
        num_workers=workers,
        validate=False,
    )
    best, first_wait = 0.0, 0.0
    for epoch in range(args.repeats + 1):
        train.sampler.set_epoch(epoch)
        start, count, first = time.perf_counter(), 0, None
        for images, _targets in train:
            first = first if first is not None else time.perf_counter() - start
            count += images.shape[0]  # images: [B, 3, size, size]
        rate = count / (time.perf_counter() - start)
        if epoch > 0 and rate > best:
            best, first_wait = rate, first
    return best, first_wait


def _photo_jpeg(side: int) -> bytes:
    """A 4:3 photo-like JPEG (gradients, noise) whose long side is `side`, quality 90."""
    rng = np.random.default_rng(0)
    height = side * 3 // 4
    y, x = np.mgrid[0:height, 0:side]
    image = np.stack([x * 255 // side, y * 255 // height, (x + y) * 127 // side], -1)
    image = (image + rng.normal(0, 12, image.shape)).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _rate(fn, seconds: float = 1.5) -> float:
    fn()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        count += 1
    return count / (time.perf_counter() - start)


def decoder_rates(side: int, model_side: int) -> dict[str, float]:
    """Images/s of each decoder on one core, for a JPEG of long side `side`."""
    import cv2
    import torchvision.io

    from pipeline.data import DetectionTransform
    from pipeline.data.decode import decode_rgb

    data = _photo_jpeg(side)
    array, tensor = np.frombuffer(data, np.uint8), torch.frombuffer(bytearray(data), dtype=torch.uint8)
    height = side * 3 // 4
    need = DetectionTransform(model_side, train=True).min_source_size(height, side)  # default jitter
    return {
        "PIL": _rate(lambda: np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))),
        "OpenCV": _rate(lambda: cv2.cvtColor(cv2.imdecode(array, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)),
        "torchvision.io": _rate(lambda: torchvision.io.decode_jpeg(tensor).permute(1, 2, 0).numpy()),
        "simplejpeg": _rate(lambda: decode_rgb(data)),
        f"simplejpeg for {model_side} px (ours)": _rate(lambda: decode_rgb(data, need)),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # the loader's work is per process; keep the main process from competing
    import cv2

    cv2.setNumThreads(1)
    if args.pil:
        from pipeline.data import decode

        decode.simplejpeg = None  # every image through PIL, as before simplejpeg
    for side in args.decode_sides:
        rates = decoder_rates(side, args.size)
        print(f"decode {side}x{side * 3 // 4} JPEG, one core: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))
        print(f"  ours/PIL: x{rates[f'simplejpeg for {args.size} px (ours)'] / rates['PIL']:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        dataset_dir = Path(tmp) / "bench"
        write_synthetic_dataset(dataset_dir, args.images + 2, args.source_size, seed=0, val_fraction=0.02)
        from pipeline.data.decode import decoder_name

        print(
            f"training pipeline ({decoder_name()}) at {args.size} px from {args.source_size} px JPEGs, "
            f"batch {args.batch_size}, "
            f"{args.images} images per epoch, best of {args.repeats}"
        )
        columns = ("engine", 6), ("store", 9), ("workers", 8), ("img/s total", 12), ("img/s per process", 18)
        print(" ".join(f"{name:>{width}}" for name, width in (*columns, ("1st batch s", 12))))
        server = start_s3(Path(tmp)) if any(store.startswith("s3") for store in args.stores) else None
        if "ray" in args.engines:
            import ray

            ray.init(include_dashboard=False, log_to_driver=False)  # after the S3 env: its workers inherit it
        try:
            uri = server.upload_dir(dataset_dir, "bench", "set") if server else None
            for engine in args.engines:
                for store in args.stores:
                    for workers in args.workers if engine == "torch" else [0]:
                        cache = tempfile.mkdtemp(dir=tmp) if store == "s3-cache" else None
                        where = dataset_dir if store == "local" else uri
                        rate, first = time_loader(where, args, workers, cache, engine)
                        processes = max(1, workers) if engine == "torch" else 1
                        shown = workers if engine == "torch" else "-"
                        print(
                            f"{engine:>6} {store:>9} {shown:>8} {rate:>12.1f} {rate / processes:>18.1f} {first:>12.2f}"
                        )
        finally:
            if server:
                server.stop()
    return 0


def start_s3(tmp: Path):
    """The tests' loopback S3 server (tests/s3_server.py), its endpoint and credentials in this process's env (Ray,
    started afterwards, passes them to its workers)."""
    import os

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from s3_server import start_s3_server

    server = start_s3_server(tmp / "moto_server.log")
    os.environ.update(server.env)
    return server


if __name__ == "__main__":
    sys.exit(main())
