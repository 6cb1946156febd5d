# Two entry points for a new user: `make run` (set up + main job) and `make test`.
PY := .venv/bin/python
UV := $(shell command -v uv 2>/dev/null || echo .venv-uv/bin/uv)

.PHONY: setup run test lint bench
setup: .venv/.installed

# uv resolves torch and torchvision as a pair from PyPI (pip would take a stray local torch wheel).
# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (CI images often set it), every process, each Ray
# worker included, would otherwise recompile torch from source on import (`import torchvision`: 10.6 s -> 4.9 s).
.venv/.installed: pyproject.toml
	@command -v uv >/dev/null 2>&1 || (python3 -m venv .venv-uv && .venv-uv/bin/pip install -q "uv>=0.5,<1")
	$(UV) venv --allow-existing -q -p 3.11 .venv
	$(UV) pip install -q --compile-bytecode -p $(PY) -e ".[test]"
	$(PY) -c "import timm, torchvision.ops, ray, mlflow, albumentations, pycocotools, importlinter"
	touch $@

run: setup
	$(PY) run_pipeline.py

# the layer contracts first (pyproject's [tool.importlinter]; under a second): a broken layer fails before the suite.
# Two pytest processes, each test file on one of them (its module fixtures, a Ray cluster, stay shared): the Ray and
# server tests spend much of their time waiting on events, which leaves the cores to the other process. Each process
# runs torch on its share of the cores, with OpenMP threads that sleep when idle, and its Ray under a temp root of
# its own (tests/conftest.py says why).
test: setup
	.venv/bin/lint-imports --no-logo --no-cache
	$(PY) -m pytest -n 2 --dist loadfile

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && .venv/bin/lint-imports --no-logo --no-cache
