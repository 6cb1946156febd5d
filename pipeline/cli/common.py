"""What the subcommands share: the job-config options (`--config`, `--set`) and how they load, the tracking-URI
option, one-line errors instead of tracebacks, SIGTERM handling. Subcommand modules import this, never each other.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config FILE` and `--set section.key=value`: the job's configuration (train, and the base of a search)."""
    parser.add_argument("--config", default=None, help=f"YAML config (default: {DEFAULT_CONFIG.name} when present)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set train.epochs=3 (repeatable)",
    )


def add_register_arguments(parser: argparse.ArgumentParser, *, search: bool) -> None:
    """`--register NAME` and `--force-champion`; a search registers by default (`effdet-<dataset folder>`) and
    offers `--no-register` instead."""
    what = "the best trial" if search else "the best model"
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--register",
        metavar="NAME",
        default=None,
        help=f"register {what} under NAME in the MLflow registry (champion moves only if it is better)"
        + ("; default: effdet-<dataset folder>" if search else ""),
    )
    if search:
        group.add_argument("--no-register", action="store_true", help="do not register the best model")
    parser.add_argument("--force-champion", action="store_true", help=f"make {what} champion regardless")
    parser.add_argument(
        "--no-onnx",
        action="store_true",
        help="register without the ONNX Runtime serving graph (saves its export; the version serves with PyTorch)",
    )


def load_job_config(args: argparse.Namespace, flag_overrides: list[str]):
    """The config file, then --set, then the command's own flags (which win)."""
    from pipeline.config import load_config

    path = args.config if args.config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    return load_config(path, [*args.overrides, *flag_overrides])


def train_config(args: argparse.Namespace):
    """`train`'s config: the file, then --set, then its --num-workers / --use-gpu / --minutes flags (which win)."""
    overrides = []
    if getattr(args, "minutes", None) is not None:  # a time budget replaces the file's length
        overrides += ["train.epochs=null", "train.steps=null", f"train.minutes={args.minutes}"]
    if args.num_workers is not None:
        overrides.append(f"ray.num_workers={args.num_workers}")
    if args.use_gpu:
        overrides.append("ray.use_gpu=true")
    return load_job_config(args, overrides)


def stop_gracefully_on_sigterm(forward_to_sigint: bool = False) -> None:
    """`submit stop`, `kill` and Kubernetes send SIGTERM, which would end the process without closing anything.

    Training turns it into a KeyboardInterrupt, which closes its MLflow run as KILLED (Ray Train's own Ctrl+C
    handler ends the process with SystemExit instead); a search forwards it as SIGINT, on which Tune saves the
    search's state for --resume.
    """

    def interrupt(signum, frame):
        if forward_to_sigint:
            os.kill(os.getpid(), signal.SIGINT)
        else:
            raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db; made absolute)",
    )


def add_backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=["auto", "onnxruntime", "torch"],
        default="auto",
        help="inference engine: auto (default) = ONNX Runtime when the version carries its graph, else PyTorch",
    )


def backend(args: argparse.Namespace) -> str | None:
    return None if args.backend == "auto" else args.backend


def tracking_uri(args: argparse.Namespace) -> str:
    from pipeline.tracking import resolve_tracking_uri

    return resolve_tracking_uri(args.tracking_uri)


def guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Expected user errors print one `error:` line and exit 1 instead of a traceback."""

    def wrapper(args: argparse.Namespace) -> int:
        from pipeline.registry.errors import ExportError, RegistryError
        from pipeline.tracking import TrackingError

        try:
            return run(args)
        # ValueError covers DatasetError, ArtifactError, ImageInputError and bad arguments; importing their
        # modules here would load torch for every subcommand
        except (RegistryError, ExportError, TrackingError, ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1

    return wrapper
