"""Optuna's multi-objective TPE (val mAP up, GFLOPs down) drives a real search of two one-epoch trials."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tune_commands import tune_command

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_optuna_search_samples_the_space_and_ranks_the_trials(tmp_path):
    from pipeline.data import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "data", num_images=24, size=128, val_fraction=0.33)
    space = tmp_path / "width.yaml"
    space.write_text("space:\n  model.fpn_channels: {choice: [16, 48]}\n  optim.lr: {loguniform: [0.01, 0.1]}\n")
    options = ["--algorithm", "optuna", "--num-samples", "2", "--max-epochs", "1", "--workers-per-trial", "1"]
    options += ["--name", "optuna", "--no-register"]
    command = tune_command(tmp_path, space, options, ["model.pretrained_backbone=null"])
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((tmp_path / "outputs" / "searches" / "optuna" / "report" / "leaderboard.json").read_text())
    assert len(rows) == 2 and all(row["status"] == "finished" and row["epochs"] == 1 for row in rows)
    for row in rows:
        assert row["params"]["model.fpn_channels"] in (16, 48)
        assert 0.01 <= row["params"]["optim.lr"] <= 0.1
        assert row["gflops"] > 0  # the second objective reached Optuna with every report
    assert "registered" not in result.stdout
