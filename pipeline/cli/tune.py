"""The `tune` subcommand: search compound scaling, BiFPN width/depth/topology and the recipe with Ray Tune.

`python run_pipeline.py tune --space tune_spaces/compound.yaml [--space ...] --num-samples N --max-epochs E
[--config FILE] [--set k=v ...] [--data DIR] [--workers-per-trial W] [--use-gpu] [--resume] [--name NAME]
[--register NAME | --no-register]`
"""

from __future__ import annotations

import argparse
import os
import sys

from pipeline.cli.common import (
    add_config_arguments,
    add_register_arguments,
    load_job_config,
    stop_gracefully_on_sigterm,
)
from pipeline.data import storage


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune", help="search scaling and hyperparameters with Ray Tune (ASHA), Pareto front of mAP vs cost"
    )
    parser.add_argument(
        "--space",
        dest="spaces",
        action="append",
        required=True,
        metavar="YAML",
        help="a search space file (repeatable: spaces compose), e.g. tune_spaces/bifpn.yaml",
    )
    parser.add_argument("--num-samples", type=int, default=4, help="trials to sample (grid spaces: grid repeats)")
    parser.add_argument("--max-epochs", type=int, default=6, help="epochs of a trial that ASHA never stops")
    add_config_arguments(parser)  # the base configuration the spaces vary, exactly as for train
    parser.add_argument("--data", default=None, help="dataset directory (data.dir)")
    parser.add_argument("--workers-per-trial", type=int, default=None, help="Ray Train workers per trial")
    parser.add_argument("--use-gpu", action="store_true", help="GPU workers (ray.gpus_per_worker each)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted search (--name or the latest)")
    parser.add_argument("--name", default=None, help="the search's name (default: tune-<timestamp>)")
    parser.add_argument(
        "--algorithm",
        default="random",
        choices=["random", "optuna"],
        help="random/grid sampling, or Optuna's multi-objective TPE (optional extra)",
    )
    parser.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a trial can be stopped")
    parser.add_argument("--reduction-factor", type=float, default=3.0, help="ASHA: keep the top 1/rf at each rung")
    parser.add_argument(
        "--max-concurrent-trials", type=int, default=None, help="default: as many as the cluster's resources fit"
    )
    add_register_arguments(parser, search=True)
    parser.set_defaults(func=run)


def _base_config(args: argparse.Namespace):
    return load_job_config(args, [f"data.dir={args.data}"] if args.data else [])


def _options(args: argparse.Namespace, config):

    from pipeline.tuning import SearchOptions

    dataset_name = storage.display_name(storage.absolute(config.data.dir))
    register = None if args.no_register else (args.register or f"effdet-{dataset_name}")
    return SearchOptions(
        spaces=tuple(args.spaces),
        num_samples=args.num_samples,
        max_epochs=args.max_epochs,
        workers_per_trial=args.workers_per_trial,
        use_gpu=args.use_gpu,
        name=args.name,
        resume=args.resume,
        algorithm=args.algorithm,
        grace_period=args.grace_period,
        reduction_factor=args.reduction_factor,
        max_concurrent_trials=args.max_concurrent_trials,
        register=register,
        force_champion=args.force_champion,
        onnx=not args.no_onnx,
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.config import ConfigError
    from pipeline.data import DatasetError
    from pipeline.tracking import TrackingError, ui_hint
    from pipeline.tuning import run_search
    from pipeline.tuning.leaderboard import format_table

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's live table with our columns (the new output has none)
    try:
        config = _base_config(args)
        stop_gracefully_on_sigterm(forward_to_sigint=True)  # Tune saves the search state on SIGINT
        outcome = run_search(config, _options(args, config))
    except (ConfigError, DatasetError, TrackingError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: continue the search with the same command plus --resume", flush=True)
        return 130
    print(f"\nsearch {outcome.name}: {len(outcome.rows)} trials in {outcome.wall_s / 60:.1f} min")
    if outcome.rows:
        print(format_table(outcome.rows))
        print("pareto: F = on the val mAP / GFLOPs front, L = on the val mAP / latency front")
    print(f"leaderboard and plot: {outcome.report_dir}")
    uri = outcome.parent.tracking_uri
    print(f"MLflow parent run {outcome.parent.run_id} in {uri}\n  view it: {ui_hint(uri)}")
    if outcome.interrupted:
        print(f"search interrupted: continue it with the same command plus --resume --name {outcome.name}")
        return 130
    if outcome.registration is not None:
        r = outcome.registration
        print(f"registered {r.model_uri} (aliases: {', '.join(r.aliases) or 'none'}): {r.decision.reason}")
    return 0
