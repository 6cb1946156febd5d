"""Fixtures of the training tests: the tiny run (`tests/tiny_run.py`; the MLflow and S3 servers are session-wide:
tests/conftest.py)."""

from tiny_run import one_torch_thread, tiny_config, tiny_dataset  # noqa: F401 (fixtures)
