"""What the search tests share: the `run_pipeline.py tune` command line over the smoke config, every output under
one folder."""

from __future__ import annotations

import sys
from pathlib import Path


def tune_command(root: Path, space: Path, options: list[str], sets: list[str]) -> list[str]:
    """`run_pipeline.py tune --config configs/smoke.yaml --space SPACE OPTIONS --set ...` with the dataset at
    root/data and outputs, Ray storage and the MLflow store under `root`; `sets` add to (and may override) those."""
    where = [
        f"data.dir={root / 'data'}",
        "data.generate_if_missing=false",
        "model.fpn_repeats=1",
        "model.head_repeats=1",
        f"train.output_dir={root / 'outputs'}",
        f"ray.storage_path={root / 'ray'}",
        f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
    ]
    base = [sys.executable, "run_pipeline.py", "tune", "--config", "configs/smoke.yaml", "--space", str(space)]
    return [*base, *options, *[arg for s in [*where, *sets] for arg in ("--set", s)]]
