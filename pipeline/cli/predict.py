"""`run_pipeline.py predict --model models:/NAME@champion IMAGE... --out DIR`: each image with its boxes drawn,
plus detections.json (COCO results format) and images.json (the image ids it refers to)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.cli.common import add_tracking_uri, guarded, tracking_uri


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="detect objects in images with a registered model")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION (or without models:/)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--score-threshold", type=float, default=0.3, help="keep detections scoring at least this (default 0.3)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--show", type=int, default=5, help="detections printed per image (all go to the JSON)")
    add_tracking_uri(parser)
    parser.set_defaults(func=guarded(run))


def run(args: argparse.Namespace) -> int:
    from pipeline.registry import decode_image, draw_detections, load_detector, to_coco_results

    if not 0.0 <= args.score_threshold <= 1.0:
        raise ValueError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    arrays = [decode_image(path, k) for k, path in enumerate(args.images)]  # every image readable before loading
    detector, version = load_detector(tracking_uri(args), args.model, batch_size=args.batch_size)
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
