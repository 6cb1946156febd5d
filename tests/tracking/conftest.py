"""Fixtures of the tracking tests: the tiny run (`tests/tiny_run.py`)."""

from tiny_run import one_torch_thread, tiny_config, tiny_dataset, unused_port  # noqa: F401 (fixtures)
