"""`run_pipeline.py tune` rejects bad input before any trial, Ray or output exists.

In this process (`pipeline.cli.main`, the code `run_pipeline.py` runs), so that each case costs no interpreter
start-up; nothing here may start Ray, which the first test checks.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_tune(tmp_path, monkeypatch, capsys):
    import ray

    monkeypatch.chdir(REPO)  # the shipped spaces are named relative to the repository, as in the README
    ray_starts: list[tuple] = []

    def refuse_ray(*args, **kwargs):  # every Ray start-up goes through ray.init
        ray_starts.append(args)
        raise RuntimeError("Ray must not start for input that is rejected")

    monkeypatch.setattr(ray, "init", refuse_ray)

    def run(*args: str) -> SimpleNamespace:
        sets = [
            f"train.output_dir={tmp_path / 'outputs'}",
            f"ray.storage_path={tmp_path / 'ray'}",
            f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"data.dir={tmp_path / 'data'}",
        ]
        capsys.readouterr()
        code = main(["tune", *args, *[a for s in sets for a in ("--set", s)]])
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err, ray_starts=list(ray_starts))

    return run


def test_impossible_space_is_rejected_before_anything_starts(run_tune, tmp_path):
    space = tmp_path / "bad.yaml"
    space.write_text("space:\n  model.fpn_channels: {choice: [64, 0]}\n", encoding="utf-8")
    result = run_tune("--space", str(space), "--num-samples", "2")
    assert result.returncode == 1
    assert f"search space {space}" in result.stderr and "model.fpn_channels=0" in result.stderr
    # nothing was written: no dataset generated, no Ray storage, no search folder, no MLflow store
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]
    assert result.ray_starts == []


def test_unknown_key_in_a_shipped_space_composition_names_both_files(run_tune):
    result = run_tune("--space", "tune_spaces/compound.yaml", "--space", "tune_spaces/bifpn.yaml")
    assert result.returncode == 1
    assert "tune_spaces/compound.yaml (compound phi) and tune_spaces/bifpn.yaml" in result.stderr


def test_bad_search_options_are_rejected(run_tune, tmp_path):
    result = run_tune("--space", "tune_spaces/bifpn.yaml", "--grace-period", "9", "--max-epochs", "3")
    assert result.returncode == 1 and "--grace-period=9" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_optuna_cannot_sample_a_grid(run_tune, tmp_path):
    space = tmp_path / "grid.yaml"
    space.write_text("space:\n  model.fusion: {grid: [fast, sum]}\n", encoding="utf-8")
    result = run_tune("--space", str(space), "--algorithm", "optuna")
    assert result.returncode == 1 and "use choice instead of grid" in result.stderr
