"""Argument parsing for `run_pipeline.py`.

Subcommand modules are imported lazily by name so that `run_pipeline.py data ...` does not pay
for importing Ray or MLflow. Each module listed in SUBCOMMANDS exposes
`add_parser(subparsers) -> None`, which registers its parser and sets `func` (args -> exit code).
The top layer: a subcommand may import any layer below, and shares helpers through `cli/common.py` only, never
another subcommand (`lint-imports`, contract cli-independent).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pipeline.cli.dependencies import MissingDependencies, check_dependencies

# name shown in `--help` -> module under pipeline.cli that implements it
SUBCOMMANDS: dict[str, str] = {
    "models": "pipeline.cli.models",
    "data": "pipeline.cli.data",
    "train": "pipeline.cli.train",
    "tune": "pipeline.cli.tune",
    "registry": "pipeline.cli.registry",
    "evaluate": "pipeline.cli.evaluate",
    "predict": "pipeline.cli.predict",
    "serve": "pipeline.cli.serve",
    "submit": "pipeline.cli.submit",
}
DEFAULT_COMMAND = ["train"]  # the main job: `python run_pipeline.py` trains on the demo dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_pipeline.py",
        description="EfficientDet training, search and registry on Ray + MLflow.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str]) -> int:
    try:
        check_dependencies()  # before any subcommand imports torch: one clear line instead of a traceback
    except MissingDependencies as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv or DEFAULT_COMMAND)
    return int(args.func(args) or 0)
