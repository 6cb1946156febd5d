"""Command-line entry point: parse arguments and dispatch to `pipeline.cli` subcommands.

Each subcommand lives in its own module under `pipeline/cli/` and registers itself with
`add_parser(subparsers)`; this file holds no logic of its own.
"""

from __future__ import annotations

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
