"""`run_pipeline.py evaluate --model models:/NAME@champion --data DIR`: COCO metrics of a registered model,
printed and logged to a new MLflow run."""

from __future__ import annotations

import argparse

from pipeline.cli.common import add_backend, add_tracking_uri, backend, guarded, tracking_uri


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="COCO-evaluate a registered model on a dataset directory")
    parser.add_argument("--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION (or without models:/)")
    parser.add_argument("--data", required=True, help="dataset directory (DIR/annotations/<split>.json, DIR/images)")
    parser.add_argument("--split", default="val", choices=["train", "val"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--nms",
        choices=("soft", "hard"),
        default="soft",
        help="soft: Gaussian soft-NMS, as the official evaluation (default); hard: the registered model's own NMS",
    )
    parser.add_argument("--no-log", action="store_true", help="print only; do not create an MLflow run")
    add_backend(parser)
    add_tracking_uri(parser)
    parser.set_defaults(func=guarded(run))


def run(args: argparse.Namespace) -> int:
    from pipeline.config import EvalConfig
    from pipeline.registry import dataset_fingerprint, load_detector
    from pipeline.registry.evaluate import check_categories, evaluate_detector, log_evaluation

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    uri = tracking_uri(args)
    fingerprint = dataset_fingerprint(args.data, args.split)  # reads every annotation: bad data fails here
    detector, version = load_detector(uri, args.model, batch_size=args.batch_size, backend=backend(args))
    if args.nms == "soft":
        detector = detector.with_postprocess(EvalConfig().postprocess())
    check_categories(args.data, args.split, detector.label_map)
    metrics = evaluate_detector(detector, args.data, args.split)
    registered_fp = version.tags.get("dataset_fingerprint")
    print(
        f"{version.name} version {version.version} on {args.data} ({args.split}, {metrics['num_images']} images, "
        f"{args.nms} NMS, {detector.backend}, "
        f"fingerprint {fingerprint}{'' if registered_fp == fingerprint else f'; registered on {registered_fp}'})"
    )
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
        print(f"  {key:<6} {metrics[key]:.4f}")
    for name, value in metrics["per_class_AP"].items():
        print(f"  AP[{name}] {value:.4f}")
    if not args.no_log:
        run_id = log_evaluation(uri, version, metrics, args.data, args.split, fingerprint)
        print(f"logged to MLflow run {run_id}")
    return 0
