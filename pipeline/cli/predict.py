"""`run_pipeline.py predict --model models:/NAME@champion INPUT... --out OUT`:

- image files: each image with its boxes drawn, plus detections.json (COCO results format) and images.json (the
  image ids it refers to), in this process;
- one folder or bucket prefix: batch prediction with Ray Data over `--num-workers` actors, one results file per
  shard, merged at the end, resumable (`pipeline.cluster.batch_predict`); OUT may be a bucket prefix too.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from pipeline.cli.common import add_backend, add_tracking_uri, backend, guarded, tracking_uri

SHARD_SIZE = 64  # images per shard file: the unit of resume


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="detect objects in images with a registered model")
    parser.add_argument(
        "images", nargs="+", metavar="INPUT", help="image files, or one folder / bucket prefix (batch prediction)"
    )
    parser.add_argument("--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION (or without models:/)")
    parser.add_argument("--out", required=True, help="output directory (batch prediction: or a bucket prefix)")
    parser.add_argument(
        "--score-threshold", type=float, default=0.3, help="keep detections scoring at least this (default 0.3)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--slice",
        default="auto",
        metavar="auto|off|PX",
        help="predict large images by overlapping windows merged into one answer per image: auto = as the model "
        "was trained (its `tiling` tag), off = each image whole, PX = windows of PX source pixels",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        metavar="N",
        help="refuse images larger than N pixels, from their header (default 400,000,000: 20,000 px square)",
    )
    parser.add_argument("--show", type=int, default=5, help="detections printed per image (all go to the JSON)")
    add_backend(parser)
    batch = parser.add_argument_group("batch prediction (INPUT is a folder or bucket prefix)")
    batch.add_argument("--num-workers", type=int, default=1, help="Ray Data actors, each holding the model once")
    batch.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs (and inference threads) per actor")
    batch.add_argument("--use-gpu", action="store_true", help="one GPU per actor")
    batch.add_argument(
        "--shard-size", type=int, default=SHARD_SIZE, help="images per output shard (the unit of resume)"
    )
    batch.add_argument("--draw", action="store_true", help="also write each image with its boxes drawn")
    add_tracking_uri(parser)
    parser.set_defaults(func=guarded(run))


def run(args: argparse.Namespace) -> int:
    from pipeline.config.tiling import slice_setting
    from pipeline.data import storage

    slice_setting(args.slice, None)  # a bad --slice fails before anything loads
    if not 0.0 <= args.score_threshold <= 1.0:
        raise ValueError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    if args.max_image_pixels is None:
        from pipeline.data.decode import DEFAULT_MAX_IMAGE_PIXELS

        args.max_image_pixels = DEFAULT_MAX_IMAGE_PIXELS
    for flag in ("batch_size", "num_workers", "shard_size", "cpus_per_worker", "max_image_pixels"):
        if getattr(args, flag) <= 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    source = args.images[0]
    if len(args.images) == 1 and (storage.is_remote(source) or Path(source).is_dir()):
        return run_batch(args)
    batch_only = {
        "--num-workers": args.num_workers != 1,
        "--shard-size": args.shard_size != SHARD_SIZE,
        "--draw": args.draw,
    }
    if any(batch_only.values()):
        given = ", ".join(flag for flag, on in batch_only.items() if on)
        raise ValueError(f"{given}: for a folder or bucket prefix (batch prediction), not for image files")
    return run_files(args)


def run_batch(args: argparse.Namespace) -> int:
    import ray

    from pipeline.cluster.batch_predict import BatchJob, run_batch_prediction
    from pipeline.cluster.runtime import keep_sigterm_handler
    from pipeline.data import storage
    from pipeline.registry.registry import get_version

    uri = tracking_uri(args)
    version = get_version(uri, args.model)  # the alias is resolved once: every actor runs this version
    job = BatchJob(
        tracking_uri=uri,
        model_ref=f"{version.name}/{version.version}",
        source=storage.absolute(args.images[0]),
        out=storage.absolute(args.out),
        num_workers=args.num_workers,
        cpus_per_worker=args.cpus_per_worker,
        use_gpu=args.use_gpu,
        backend=backend(args),
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        score_threshold=args.score_threshold,
        draw=args.draw,
        slice=args.slice,
        max_image_pixels=args.max_image_pixels,
    )
    started = not ray.is_initialized()
    if started:
        with keep_sigterm_handler():
            # RAY_ADDRESS (a cluster, a submitted job), else a new local Ray: the rule `train` follows
            ray.init(address=os.environ.get("RAY_ADDRESS") or "local", log_to_driver=True, include_dashboard=False)
    try:
        summary = run_batch_prediction(job, log=lambda line: print(line, flush=True))
    finally:
        if started:
            ray.shutdown()
    rate = f", {summary.images_per_s:.1f} img/s" if summary.shards_run else ""
    if summary.steady_images_per_s:
        rate += f"; {summary.steady_images_per_s:.1f} img/s once the models were loaded"
    print(
        f"{version.name} version {version.version}: {summary.detections} detections in {summary.images} images "
        f"({summary.shards_run} of {summary.shards} shards run in {summary.seconds:.1f} s{rate}) -> {job.out}/ "
        "(detections.json, images.json, failed.json, shards/)"
    )
    if summary.failed:
        print(f"{len(summary.failed)} image(s) skipped, unreadable (listed in failed.json):")
        for failure in summary.failed:
            print(f"  {failure['file_name']}: {failure['error']}")
    return 0


def run_files(args: argparse.Namespace) -> int:
    from pipeline.registry import decode_image, draw_detections, load_detector, to_coco_results

    # every image readable before the model loads
    arrays = [decode_image(path, k, args.max_image_pixels) for k, path in enumerate(args.images)]
    detector, version = load_detector(
        tracking_uri(args),
        args.model,
        batch_size=args.batch_size,
        backend=backend(args),
        use_gpu=args.use_gpu,
        slice=args.slice,
    )
    image_ids = list(range(1, len(arrays) + 1))
    detections = [
        d for d in detector.to_records(detector.predict_arrays(arrays, image_ids)) if d["score"] >= args.score_threshold
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = []
    for image_id, path, array in zip(image_ids, args.images, arrays, strict=True):
        mine = [d for d in detections if d["image_id"] == image_id]
        drawn = draw_detections(array, mine, out / f"{image_id:04d}_{Path(path).stem}.png")
        images.append(
            {
                "id": image_id,
                "file_name": str(path),
                "width": array.shape[1],
                "height": array.shape[0],
                "drawn": drawn.name,
            }
        )
        _print_detections(path, mine, args.show)
    (out / "detections.json").write_text(json.dumps(to_coco_results(detections), indent=1), encoding="utf-8")
    (out / "images.json").write_text(json.dumps(images, indent=1), encoding="utf-8")
    print(
        f"{version.name} version {version.version}: {len(detections)} detections in {len(arrays)} images "
        f"-> {out}/ (detections.json, images.json, drawn images)"
    )
    return 0


def _print_detections(path: str, detections: list[dict], limit: int) -> None:
    print(f"{path}: {len(detections)} detections")
    for d in detections[:limit]:
        print(f"  {d['label']:<12} {d['score']:.3f}  xyxy [{', '.join(f'{v:.1f}' for v in d['box'])}]")
    if len(detections) > limit:
        print(f"  ... {len(detections) - limit} more in detections.json")
