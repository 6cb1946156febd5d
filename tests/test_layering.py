"""The architecture's contracts (`[tool.importlinter]` in pyproject.toml): the tree keeps them, and `lint-imports`
breaks on each kind of import they forbid (checked on a copy of the tree with one bad import added)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy's packages, not the installed ones
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_every_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout


# (file of the copy, line appended to it, id of the contract it must break); imports inside functions count too
BAD_IMPORTS = [
    ("effdet_core/topology.py", "import pipeline.data", "model"),
    ("effdet_core/anchors.py", "def _f():\n    import mlflow", "model"),
    ("pipeline/training/evaluate.py", "def _f():\n    import mlflow", "plain-training"),
    ("pipeline/training/loop.py", "from pipeline import tracking", "plain-training"),
    ("pipeline/registry/predict.py", "def _f():\n    import ray.data", "no-ray-below-cluster"),
    ("pipeline/data/layout.py", "def _f():\n    from pipeline.training import schedule", "layers"),
    ("pipeline/stray.py", "import pipeline.config", "layers"),  # a module outside every layer
    ("pipeline/training/stream.py", "def _f():\n    from pipeline.training import loop", "acyclic"),
    ("pipeline/cli/train.py", "def _f():\n    from pipeline.cli import tune", "cli-independent"),
    ("pipeline/registry/export.py", "import effdet", "no-reference-effdet"),
]


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    for name in ("pipeline", "effdet_core"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root)
    return root


@pytest.mark.parametrize(("path", "line", "contract"), BAD_IMPORTS, ids=[f"{c}:{p}" for p, _, c in BAD_IMPORTS])
def test_a_bad_import_breaks_its_contract(tree_copy: Path, path: str, line: str, contract: str):
    target = tree_copy / path
    original = target.read_text() if target.exists() else None
    target.write_text((original or "") + f"\n\n{line}\n")
    try:
        result = lint_imports(tree_copy)
    finally:
        if original is None:
            target.unlink()
        else:
            target.write_text(original)
    assert result.returncode != 0
    names = {c["id"]: c["name"] for c in CONTRACTS}
    broken = {i for i, name in names.items() if f"{name} BROKEN" in " ".join(result.stdout.split())}
    assert broken >= {contract}, result.stdout
