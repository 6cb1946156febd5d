"""Ray Train runs are resumed by identity (`ray.storage_path` + run name): names, resume and the driver's
bookkeeping, with a storage URI."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cluster import train as ray_train
from pipeline.config import ConfigError, replace


def test_run_names_and_resume_work_with_a_storage_uri(tiny_config, tmp_path):
    storage = (tmp_path / "bucket").as_uri()  # file:// goes through pyarrow, as s3:// and gs:// do
    config = replace(tiny_config, ray={"storage_path": storage, "name": "run1"})
    with pytest.raises(ConfigError, match="--resume: no run run1"):
        ray_train.run_name(config, resume=True)
    assert ray_train.run_name(config, resume=False) == "run1"
    (tmp_path / "bucket" / "run1").mkdir(parents=True)
    with pytest.raises(ConfigError, match="a run of that name exists"):
        ray_train.run_name(config, resume=False)
    assert ray_train.run_name(config, resume=True) == "run1"
    # the driver's bookkeeping cannot live in object storage: it stays beside the local outputs
    assert ray_train._meta_dir(config) == Path(config.train.output_dir) / "_pipeline"
    assert ray_train.run_location(storage, "run1") == f"{storage}/run1"
