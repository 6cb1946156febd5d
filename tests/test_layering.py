"""The import direction of DESIGN.md: each layer imports only layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# layer -> top-level names it must never import
FORBIDDEN = {
    "effdet_core": {"ray", "mlflow", "pipeline", "cluster", "tune_spaces", "run_pipeline", "effdet"},
    "pipeline": {"cluster", "run_pipeline", "effdet"},
    "cluster": {"run_pipeline", "effdet"},
}


def _imported_top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_layers_import_downwards_only():
    violations = []
    for layer, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / layer).rglob("*.py")):
            bad = _imported_top_level_names(path) & forbidden
            if bad:
                violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not violations, "\n".join(violations)


def test_the_check_sees_imports(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("import ray.train\nfrom mlflow import log_metric\nfrom . import sibling\n")
    assert _imported_top_level_names(sample) == {"ray", "mlflow"}
