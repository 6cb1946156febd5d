"""Progress inside an evaluation period: a line at most every `train.log_every_seconds`, at most one per step,
with step/total, loss, img/s, the data-wait share and the ETAs of the epoch and of the run."""

from __future__ import annotations

import re
import time

import pytest
import torch
from tiny_run import without_auto

from pipeline.config import replace
from pipeline.training.loop import fit, train_steps
from pipeline.training.progress import format_step_progress
from pipeline.training.schedule import resolve_schedule
from pipeline.training.stream import BatchStream
from pipeline.training.trainer import build_trainer

LABEL_MAP = {"category_ids": [1, 2, 3], "names": ["circle", "square", "triangle"]}
LINE = re.compile(
    r"^step (\d+)/(\d+) \(epoch [\d.]+\)  loss [\d.]+  [\d.]+ img/s \(data wait \d+%\)  lr [\d.e+-]+  "
    r"ETA epoch \d+m\d\ds, run \d+m\d\ds$"
)


class _SlowLoader:
    """What `BatchStream` uses of a DataLoader: `n` batches of 2 an epoch, each `delay` seconds late."""

    batch_size = 2

    def __init__(self, n: int, delay: float) -> None:
        target = {"boxes": torch.tensor([[10.0, 12.0, 70.0, 90.0]]), "labels": torch.tensor([1])}
        self.batch, self.sampler, self.delay = (
            (torch.randn(2, 3, 128, 128), [target, target]),
            list(range(2 * n)),
            delay,
        )

    def __iter__(self):
        for _ in range(len(self.sampler) // 2):
            time.sleep(self.delay)  # the loader's pace is what is measured here, not a wait for an event
            yield self.batch


def test_progress_comes_at_the_configured_cadence_and_at_most_once_a_step(tiny_config):
    interval = 0.3
    config = replace(tiny_config, train={"log_every_seconds": interval})
    schedule = resolve_schedule(config.train, config.optim, 10)
    trainer = build_trainer(without_auto(config), LABEL_MAP, schedule, torch.device("cpu"))
    seen: list[tuple[float, dict]] = []
    start = time.perf_counter()
    train_steps(
        trainer, BatchStream(_SlowLoader(10, delay=0.2), 1), 8, lambda t, s: seen.append((time.perf_counter(), s))
    )
    times, steps = [start] + [t for t, _ in seen], [s["step"] for _, s in seen]
    assert len(seen) >= 3, steps  # 8 steps of >= 0.2 s: a line about every other step
    assert all(b - a >= interval for a, b in zip(times, times[1:], strict=False)), times
    assert steps == sorted(set(steps)) and steps[-1] <= 8  # never two for one step
    last = seen[-1][1]
    # the loader's 0.2 s per batch is the wait: share x seconds per step, whatever the machine's compute speed
    assert 0.19 <= last["data_wait_share"] * last["seconds_per_step"] < 0.35, last
    assert last["images_per_s"] > 0 and last["seconds_per_step"] >= 0.2
    assert LINE.match(format_step_progress(last, schedule)), format_step_progress(last, schedule)


def test_a_run_whose_epoch_outlasts_the_interval_prints_progress_inside_it(tiny_config, tmp_path, capsys):
    config = replace(tiny_config, train={"log_every_seconds": 0.05, "epochs": 1}, ray={"num_workers": 1})
    fit(config, tmp_path)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    matches = [LINE.match(line) for line in lines]
    assert matches and all(matches), lines
    steps = [int(m.group(1)) for m in matches]
    total = int(matches[0].group(2))
    assert steps == sorted(set(steps)) and 1 <= steps[0] < total, lines  # inside the one epoch, once a step


@pytest.mark.parametrize("value", [0, -1])
def test_a_non_positive_interval_is_refused(tiny_config, value):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=f"train.log_every_seconds={float(value)!r}: must be > 0 or null"):
        replace(tiny_config, train={"log_every_seconds": value})
