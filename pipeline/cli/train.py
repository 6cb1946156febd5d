"""The `train` subcommand (the main job): distributed EfficientDet training on Ray, tracked in MLflow.

`python run_pipeline.py train [--config FILE] [--set k=v ...] [--num-workers N | MIN-MAX] [--use-gpu] [--resume]
[--register NAME [--force-champion]]`
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.cli.common import add_config_arguments, add_register_arguments, stop_gracefully_on_sigterm, train_config
from pipeline.data import storage


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train EfficientDet with Ray Train, tracked in MLflow (main job)")
    add_config_arguments(parser)
    parser.add_argument(
        "--num-workers",
        type=worker_count,
        default=None,
        metavar="N|MIN-MAX",
        help="Ray Train workers (ray.num_workers); MIN-MAX trains elastically: starts once MIN fit, grows to MAX, "
        "goes on with fewer down to MIN, with MAX's global batch at every size",
    )
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker (ray.use_gpu=true)")
    parser.add_argument(
        "--minutes", type=float, default=None, help="time budget of the whole job (train.minutes; replaces the length)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the latest run (or ray.name) from its last epoch checkpoint"
    )
    add_register_arguments(parser, search=False)
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config (YAML) and exit without training"
    )
    parser.set_defaults(func=run)


def worker_count(text: str) -> str:
    """`N` or `MIN-MAX` -> the YAML value of ray.num_workers (`N` or `[MIN, MAX]`); the config checks the numbers."""
    parts = text.split("-")
    if len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: give a worker count N or a range MIN-MAX, e.g. 2 or 2-8")
    return parts[0] if len(parts) == 1 else f"[{parts[0]}, {parts[1]}]"


def run(args: argparse.Namespace) -> int:
    from pipeline import PROCESS_STARTED
    from pipeline.cluster.train import TrainingJobError, TrainingStopped, run_name, train
    from pipeline.config import ConfigError, to_yaml
    from pipeline.data import DatasetError
    from pipeline.plan.header import header_lines
    from pipeline.plan.job import resolve_job
    from pipeline.tracking import TrackingError
    from pipeline.training.checkpoint import CheckpointError

    try:
        config = train_config(args)
        if args.register is not None and not args.register.strip():
            raise ConfigError("--register needs a non-empty model name")
        if args.print_config:
            print(to_yaml(config), end="", flush=True)
            return 0
        job = resolve_job(config)
        name = run_name(job.config, args.resume)
        print("\n".join(header_lines(job)), flush=True)
        stop_gracefully_on_sigterm()
        outcome = train(job, resume=args.resume, name=name)
        registration = _register(args, job.config, outcome) if args.register else None
    except (ConfigError, DatasetError, TrackingError, CheckpointError, TrainingJobError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        what = str(e) if isinstance(e, TrainingStopped) else "interrupted"
        print(f"\n{what}: the MLflow run is marked KILLED; continue from the last checkpoint with --resume", flush=True)
        return 130
    m = outcome.report.metrics
    budget = job.config.train.minutes
    took = f" (the whole job {(time.time() - PROCESS_STARTED) / 60:.2f} min, budget {budget:g})" if budget else ""
    print(
        f"\ndone in {outcome.wall_s / 60:.1f} min{took}: best at step {outcome.report.best_step} "
        f"(epoch {outcome.report.best_epoch:.3g}), "
        f"val AP {m.get('val_AP', float('nan')):.3f}, AP50 {m.get('val_AP50', float('nan')):.3f}\n"
        f"MLflow run {outcome.run.run_id} ({outcome.run.url()}) in {outcome.run.tracking_uri}\n"
        f"Ray Train run {outcome.run_dir} (resume: --resume --set ray.name={outcome.name})\n"
        f"best checkpoint: {outcome.report.files['best_checkpoint']}",
        flush=True,
    )
    if registration is not None:
        print(
            f"registered {registration.model_uri} (aliases: {', '.join(registration.aliases) or 'none'}): "
            f"{registration.decision.reason}",
            flush=True,
        )
    print("\n".join(next_steps(job.config, outcome, registration)), flush=True)
    return 0


def next_steps(config, outcome, registration) -> list[str]:
    """What a user does next with the model: predict (registering it first when it is not), evaluate, look."""
    import shlex

    from pipeline.tracking import resolve_tracking_uri, ui_hint

    same_store = outcome.run.tracking_uri == resolve_tracking_uri(None)  # what the registry commands use by default
    uri = "" if same_store else f" --tracking-uri {outcome.run.tracking_uri}"
    checkpoint = outcome.report.files["best_checkpoint"].parent
    run = _this_pipeline()
    lines = ["next:"]
    if registration is None:
        name = f"effdet-{storage.display_name(config.data.dir)}"
        lines.append(
            f"  register it:  {run} registry register {shlex.quote(str(checkpoint))} {name} "
            f"--data {shlex.quote(config.data.dir)}{uri}"
        )
        model = f"models:/{name}@champion"
    else:
        model = f"models:/{registration.name}/{registration.version}"
    lines += [
        f"  predict:      {run} predict --model {model} IMAGE...|FOLDER --out predictions/{uri}",
        f"  evaluate:     {run} evaluate --model {model} --data {shlex.quote(config.data.dir)}{uri}",
        f"  look:         {ui_hint(outcome.run.tracking_uri)}",
    ]
    return lines


def _this_pipeline() -> str:
    """`run_pipeline.py` under this interpreter (`.venv/bin/python` after `make run`): a fresh shell's `python`
    usually lacks the project's dependencies."""
    import shlex

    python = Path(sys.executable)
    if python.is_relative_to(Path.cwd()):
        python = python.relative_to(Path.cwd())
    return f"{shlex.quote(str(python))} run_pipeline.py"


def _register(args: argparse.Namespace, config, outcome):
    """Registers the run's best checkpoint; champion moves only if it beats the champion on the same val set."""
    from pipeline.registry import dataset_fingerprint, register_from_checkpoint

    return register_from_checkpoint(
        outcome.report.files["best_checkpoint"],
        args.register,
        outcome.run.tracking_uri,
        metrics=None,  # the best epoch's metrics, read from the checkpoint
        dataset_fingerprint=dataset_fingerprint(storage.absolute(config.data.dir), "val"),
        run_id=outcome.run.run_id,
        force=args.force_champion,
        onnx=not args.no_onnx,
        data_dir=storage.absolute(config.data.dir),
    )
