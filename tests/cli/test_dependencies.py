"""The start-up dependency check: it knows every dependency pyproject.toml declares, and a Python without one of
them gets a one-line reason naming the module and the fix, with exit code 2, before any subcommand runs."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from pipeline.cli import dependencies, main

ROOT = Path(__file__).resolve().parents[2]


def test_every_declared_dependency_is_checked_and_importable_here():
    with open(ROOT / "pyproject.toml", "rb") as f:
        declared = {Requirement(text).name.lower() for text in tomllib.load(f)["project"]["dependencies"]}
    assert declared == set(dependencies.REQUIRED_MODULES)
    assert dependencies.missing_modules() == []  # the test venv is the project's


def test_a_python_without_torch_is_told_what_is_missing_and_how_to_fix_it(monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("torch", "mlflow") else real_find_spec(name, *a)
    )
    assert main(["data", "--help"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "(missing: torch, mlflow)" in err
    assert "make setup" in err and "submit without --no-install" in err
