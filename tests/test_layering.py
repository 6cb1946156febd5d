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


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.update([node.module, *(f"{node.module}.{alias.name}" for alias in node.names)])
    return modules


def test_subcommand_modules_share_helpers_through_common_only():
    """Each `pipeline/cli/<command>.py` may import `pipeline.cli.common`, never another subcommand or the package."""
    cli = ROOT / "pipeline" / "cli"
    subcommands = {p.stem for p in cli.glob("*.py")} - {"__init__", "common"}
    violations = []
    for name in sorted(subcommands):
        sideways = {m for m in _imported_modules(cli / f"{name}.py") if m.startswith("pipeline.cli")}
        bad = sideways - {"pipeline.cli.common"} - {f"pipeline.cli.common.{n}" for n in _public(cli / "common.py")}
        if bad:
            violations.append(f"pipeline/cli/{name}.py imports {sorted(bad)}")
    assert not violations, "\n".join(violations)


def _public(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)} | {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
