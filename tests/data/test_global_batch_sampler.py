"""`GlobalBatchSampler`: an optimizer step's images and micro-batches do not depend on the world size, so an elastic
run resized mid-epoch trains every image once, in the same micro-batches."""

from __future__ import annotations

import pytest

from pipeline.data import GlobalBatchSampler, StepLayout


def _steps(num_images: int, batch: int, chunks: int, world: int, epoch: int = 1, skip_steps: int = 0):
    """Per step, its chunks as {chunk index: images}, gathered from every rank's sampler."""
    samplers = [GlobalBatchSampler(num_images, batch, chunks, world, rank, seed=7) for rank in range(world)]
    steps: dict[int, dict[int, tuple[int, ...]]] = {}
    for rank, sampler in enumerate(samplers):
        sampler.set_epoch(epoch)
        layout = sampler.layout
        sampler.skip(skip_steps * layout.batches_per_step * batch)
        indices = list(sampler)
        mine = list(range(rank, chunks, world))
        for n in range(len(indices) // batch):
            step, k = skip_steps + n // len(mine), mine[n % len(mine)]
            steps.setdefault(step, {})[k] = tuple(indices[n * batch : (n + 1) * batch])
    return steps


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_a_steps_micro_batches_are_the_same_at_every_world_size(world):
    reference = _steps(40, 2, 4, 1)
    assert _steps(40, 2, 4, world) == reference
    assert sorted(i for chunks in reference.values() for c in chunks.values() for i in c) == list(range(40))


def test_resized_mid_epoch_every_image_once_in_the_same_micro_batches():
    """5 steps on 2 workers, then the rest of the epoch on 1 (resumed by step): each image once, chunk for chunk as
    a run that never resized."""
    before = {s: c for s, c in _steps(48, 2, 4, 2).items() if s < 5}
    after = _steps(48, 2, 4, 1, skip_steps=5)
    assert min(after) == 5 and {**before, **after} == _steps(48, 2, 4, 1)
    seen = [i for chunks in [*before.values(), *after.values()] for c in chunks.values() for i in c]
    assert sorted(seen) == list(range(48))


def test_uneven_world_takes_one_chunk_more_on_the_first_ranks_and_weights_losses():
    layouts = [StepLayout(batch_size=4, chunks=3, world_size=2, rank=r, steps_per_epoch=1) for r in range(2)]
    assert [layout.batches_per_step for layout in layouts] == [2, 1]
    # DDP means the ranks' gradients: (1 / world) * sum of each micro-batch's weighted loss = the mean over 3 chunks
    total = sum(layout.batches_per_step * layout.loss_weight for layout in layouts) / 2
    assert total == pytest.approx(1.0) and layouts[0].global_batch == 12
    with pytest.raises(ValueError, match="world_size <= chunks"):
        StepLayout(batch_size=4, chunks=2, world_size=3, rank=0, steps_per_epoch=1)


def test_padding_fills_the_last_step_with_the_epochs_first_images():
    steps = _steps(10, 2, 2, 2)  # global batch 4: 3 steps, 2 repeats
    seen = [i for chunks in steps.values() for c in chunks.values() for i in c]
    assert len(seen) == 12 and set(seen) == set(range(10))
    order = GlobalBatchSampler(10, 2, 2, seed=7)
    order.set_epoch(1)
    assert order.epoch_order()[10:] == order.epoch_order()[:2]


def test_the_progress_line_counts_all_ranks_images_from_rank_0s_share():
    """An elastic 1-4 run on 3 workers: rank 0 trains 2 of a step's 4 micro-batches, so its images count twice
    (not 3 times, as 'every rank trains as many' would say)."""
    from types import SimpleNamespace

    from pipeline.training.loop import rank_share

    layout = StepLayout(batch_size=4, chunks=4, world_size=3, rank=0, steps_per_epoch=10)
    assert rank_share(SimpleNamespace(layout=layout)) == 0.5
    even = StepLayout(batch_size=4, chunks=4, world_size=2, rank=0, steps_per_epoch=10)
    assert rank_share(SimpleNamespace(layout=even)) == 0.5
    assert rank_share(SimpleNamespace(layout=StepLayout(4, 4, 4, 0, 10))) == 0.25
