"""Optuna's multi-objective TPE (val mAP up, GFLOPs down) drives a real search of two one-epoch trials."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_optuna_search_samples_the_space_and_ranks_the_trials(tmp_path):
    from pipeline.data import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data", num_images=24, size=128, val_fraction=0.33)
    space = tmp_path / "width.yaml"
    space.write_text("space:\n  model.fpn_channels: {choice: [16, 48]}\n  optim.lr: {loguniform: [0.01, 0.1]}\n")
    sets = [
        f"data.dir={tmp_path / 'data'}",
        "data.generate_if_missing=false",
        "model.fpn_repeats=1",
        "model.head_repeats=1",
        "model.pretrained_backbone=null",
        f"train.output_dir={tmp_path / 'outputs'}",
        f"ray.storage_path={tmp_path / 'ray'}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    command = [
        sys.executable,
        "run_pipeline.py",
        "tune",
        "--config",
        "configs/smoke.yaml",
        "--space",
        str(space),
        "--algorithm",
        "optuna",
        "--num-samples",
        "2",
        "--max-epochs",
        "1",
        "--workers-per-trial",
        "1",
        "--name",
        "optuna",
        "--no-register",
        *[arg for s in sets for arg in ("--set", s)],
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((tmp_path / "outputs" / "searches" / "optuna" / "report" / "leaderboard.json").read_text())
    assert len(rows) == 2 and all(row["status"] == "finished" and row["epochs"] == 1 for row in rows)
    for row in rows:
        assert row["params"]["model.fpn_channels"] in (16, 48)
        assert 0.01 <= row["params"]["optim.lr"] <= 0.1
        assert row["gflops"] > 0  # the second objective reached Optuna with every report
    assert "registered" not in result.stdout
