"""`ray.num_workers: [MIN, MAX]` and `--num-workers MIN-MAX`: checked, described in the header, refused where a run
cannot be elastic (a search trial)."""

from __future__ import annotations

import argparse

import pytest

from pipeline.cli.train import worker_count
from pipeline.config import ConfigError, from_dict, load_config
from pipeline.plan.header import elastic_line
from pipeline.tuning.search import SearchOptions, run_search


@pytest.mark.parametrize(
    ("value", "message"),
    [([2, 1], "needs 1 <= MIN <= MAX"), ([0, 2], "needs 1 <= MIN <= MAX"), ([1, 2, 3], "a range is"), (0, ">= 1")],
)
def test_a_bad_worker_range_is_refused_by_key_and_value(value, message):
    with pytest.raises(ConfigError, match=rf"ray.num_workers={value!r}.*{message}".replace("[", r"\[")):
        from_dict({"ray": {"num_workers": value}})
    with pytest.raises(ConfigError, match="ray.elastic_resize_interval_s=0.0: must be > 0"):
        from_dict({"ray": {"elastic_resize_interval_s": 0}})


def test_the_cli_range_becomes_the_configs_and_a_typo_is_refused():
    config = load_config(None, [f"ray.num_workers={worker_count('2-8')}"])
    assert config.ray.num_workers == (2, 8) and config.ray.elastic and config.ray.max_workers == 8
    fixed = load_config(None, [f"ray.num_workers={worker_count('3')}"]).ray
    assert fixed.num_workers == 3 and not fixed.elastic and fixed.min_workers == fixed.max_workers == 3
    assert not load_config(None, ["ray.num_workers=[2, 2]"]).ray.elastic  # a range of one size is a fixed group
    for typo in ("2-", "a-4", "1-2-3"):
        with pytest.raises(argparse.ArgumentTypeError, match="N or a range MIN-MAX"):
            worker_count(typo)


def test_the_header_gives_each_sizes_accumulation_and_the_uneven_rule():
    config = from_dict({"ray": {"num_workers": [2, 4]}, "data": {"batch_size": 4}, "train": {"grad_accum_steps": 1}})
    line = elastic_line(config)
    assert "global batch stays 4 micro-batches of 4" in line
    assert "by world size 2: 2, 3: 2/1, 4: 1" in line  # 3 workers: the first takes 2, the others 1
    assert "the first workers take one more" in line and "lr, warm-up, schedule, EMA and steps" in line


def test_a_search_refuses_elastic_trials_before_anything_starts():
    elastic = from_dict({"ray": {"num_workers": [1, 2]}})
    with pytest.raises(ConfigError, match=r"a search trial cannot train elastically.*--workers-per-trial"):
        run_search(elastic, SearchOptions(spaces=("tune_spaces/compound.yaml",)))
    # --workers-per-trial gives every trial a fixed size: past this check (the space then fails to load here)
    with pytest.raises(Exception) as other:
        run_search(elastic, SearchOptions(spaces=("no-such-space.yaml",), workers_per_trial=1))
    assert "elastically" not in str(other.value)
