"""The `train` subcommand (the main job): distributed EfficientDet training on Ray, tracked in MLflow.

`python run_pipeline.py train [--config FILE] [--set k=v ...] [--num-workers N] [--use-gpu] [--resume]`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train EfficientDet with Ray Train, tracked in MLflow (main job)")
    parser.add_argument("--config", default=None, help=f"YAML config (default: {DEFAULT_CONFIG.name} when present)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set train.epochs=3 (repeatable)",
    )
    parser.add_argument("--num-workers", type=int, default=None, help="Ray Train workers (ray.num_workers)")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker (ray.use_gpu=true)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the latest run (or ray.name) from its last epoch checkpoint"
    )
    parser.set_defaults(func=run)


def resolve_config(args: argparse.Namespace):
    """The config file plus flag overrides; the flags win over --set."""
    from pipeline.config import load_config

    path = args.config if args.config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    overrides = list(args.overrides)
    if args.num_workers is not None:
        overrides.append(f"ray.num_workers={args.num_workers}")
    if args.use_gpu:
        overrides.append("ray.use_gpu=true")
    return load_config(path, overrides)


def run(args: argparse.Namespace) -> int:
    from pipeline.config import ConfigError, to_yaml
    from pipeline.data import DatasetError
    from pipeline.ray_train import TrainingJobError, train
    from pipeline.tracking import TrackingError, ui_hint
    from pipeline.training.checkpoint import CheckpointError

    try:
        config = resolve_config(args)
        print("resolved config:\n" + to_yaml(config), flush=True)
        outcome = train(config, resume=args.resume)
    except (ConfigError, DatasetError, TrackingError, CheckpointError, TrainingJobError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    m = outcome.report.metrics
    print(
        f"\ndone in {outcome.wall_s / 60:.1f} min: best epoch {outcome.report.best_epoch}, "
        f"val AP {m.get('val_AP', float('nan')):.3f}, AP50 {m.get('val_AP50', float('nan')):.3f}\n"
        f"MLflow run {outcome.run.run_id} ({outcome.run.url()}) in {outcome.run.tracking_uri}\n"
        f"  view it: {ui_hint(outcome.run.tracking_uri)}\n"
        f"Ray Train run {outcome.name!r} in {outcome.run_dir.parent} (resume: --resume --set ray.name={outcome.name})\n"
        f"best checkpoint: {outcome.report.files['best_checkpoint']}",
        flush=True,
    )
    return 0
