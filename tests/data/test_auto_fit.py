"""`auto` settings fitted to the boxes: each choice fires on data built to need it and stays put on data that does
not; pinned values are never touched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.data.auto_fit import choose_augment, fit_to_data, judge_view
from pipeline.data.coco_index import ImageRecord


def records(boxes_per_image: list[np.ndarray], side: int) -> list[ImageRecord]:
    return [
        ImageRecord(i, Path(f"{i}.jpg"), side, side, b.astype(np.float32), np.zeros(len(b), np.int64))
        for i, b in enumerate(boxes_per_image)
    ]


def square_boxes(rng, n: int, side: int, sizes: tuple[float, float]) -> np.ndarray:
    """`n` near-square boxes of `sizes` px (log-uniform) anywhere in a `side` px image."""
    s = np.exp(rng.uniform(np.log(sizes[0]), np.log(sizes[1]), (n, 1)))
    wh = np.concatenate([s * rng.uniform(0.9, 1.1, (n, 1)), s], axis=1)
    centre = rng.uniform(wh / 2, side - wh / 2)
    return np.concatenate([centre - wh / 2, centre + wh / 2], axis=1)


def dataset(sizes: tuple[float, float], side: int, images: int = 20, per_image: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    return records([square_boxes(rng, per_image, side, sizes) for _ in range(images)], side)


def fitted(data, *overrides: str):
    config = load_config(None, ["model.variant=lite0", *overrides])  # official 320 px, P3-P7, anchor scale 3
    return fit_to_data(config, data)


def chosen(choices) -> dict:
    return {c.key: c.value for c in choices}


def test_small_boxes_upsample_within_the_cap():
    """6-10 px boxes in 512 px images: the median box reaches 16 px only at ~1000 px; the cap (2x official) stops it."""
    data = dataset((6, 10), 512)
    config, choices = fitted(data)
    assert config.model.image_size == 640 and "capped" in chosen_reason(choices, "model.image_size")
    config, _ = fitted(data, "model.max_image_size=512")
    assert config.model.image_size == 512


def test_large_boxes_keep_the_official_size_and_small_images_their_own():
    config, choices = fitted(dataset((150, 400), 1024))  # would fit at 100 px: never below the official 320
    assert config.model.image_size == 320
    config, _ = fitted(dataset((60, 120), 256))  # images smaller than the official size: their own
    assert config.model.image_size == 256


def test_a_time_budget_takes_the_smallest_size_at_which_the_boxes_stay_resolvable():
    """Under train.minutes a run is step-limited: 6-10 px boxes in 512 px images keep 512 (the median box 8 px)
    instead of upsampling to 640; large boxes go down to the smallest size; a pinned size stays pinned."""
    small = dataset((6, 10), 512)
    config, choices = fitted(small, "train.minutes=5")
    assert config.model.image_size == 512 and "without a budget 640 px" in chosen_reason(choices, "model.image_size")
    config, _ = fitted(dataset((150, 400), 1024), "train.minutes=5")
    assert config.model.image_size == 256
    config, _ = fitted(dataset((3, 5), 256), "train.minutes=5")  # below resolvable anywhere: the fitted cap
    assert config.model.image_size == fitted(dataset((3, 5), 256))[0].model.image_size
    config, choices = fitted(small, "train.minutes=5", "model.image_size=640")
    assert config.model.image_size == 640 and "model.image_size" not in chosen(choices)


def test_a_stride_4_level_is_added_only_for_boxes_below_the_p3_anchors():
    small, _ = fitted(dataset((8, 14), 384), "model.image_size=384")
    assert small.model.min_level == 2
    large, choices = fitted(dataset((40, 200), 384), "model.image_size=384")
    assert large.model.min_level == 3 and "official P3" in chosen_reason(choices, "model.min_level")


def test_top_levels_that_match_no_box_are_dropped():
    small, choices = fitted(dataset((8, 24), 384), "model.image_size=384")
    assert small.model.max_level < 7 and "P7" in chosen_reason(choices, "model.max_level")
    spread, _ = fitted(dataset((20, 360), 384, per_image=5), "model.image_size=384")
    assert spread.model.max_level == 7  # boxes up to the image side need the stride-128 level


def overhead_scene(rng, side: int = 512) -> np.ndarray:
    """Vehicles at either orientation anywhere, sizes independent of position."""
    n = 30
    length = rng.uniform(10, 20, n)
    wide = rng.random(n) < 0.5
    wh = np.stack([np.where(wide, length, length / 2), np.where(wide, length / 2, length)], axis=1)
    centre = rng.uniform(wh / 2, side - wh / 2)
    return np.concatenate([centre - wh / 2, centre + wh / 2], axis=1)


def street_scene(rng, side: int = 512) -> np.ndarray:
    """Pedestrians seen from the side: tall boxes in the lower half, larger the lower (nearer) they stand."""
    n = 30
    feet = rng.uniform(0.45, 1.0, n) * side
    height = 10 + 200 * (feet / side - 0.45) + rng.normal(0, 3, n)
    width = height * rng.uniform(0.35, 0.5, n)
    x = rng.uniform(width / 2, side - width / 2)
    return np.stack([x - width / 2, feet - height, x + width / 2, feet], axis=1).clip(0, side)


def test_the_view_is_judged_overhead_from_above_and_side_from_the_street():
    rng = np.random.default_rng(1)
    above = records([overhead_scene(rng) for _ in range(10)], 512)
    street = records([street_scene(rng) for _ in range(10)], 512)
    assert judge_view(above)[0] == "overhead" and judge_view(street)[0] == "side"
    config = load_config(None, [])
    assert choose_augment(config, above).value == "aerial" and choose_augment(config, street).value == "default"
    few = records([overhead_scene(rng)], 512)  # 30 boxes: too few to judge, so no silent guess of overhead
    assert judge_view(few)[0] == "side" and "too few" in judge_view(few)[1]


@pytest.mark.parametrize("view, preset", [("overhead", "aerial"), ("side", "default")])
def test_a_pinned_view_decides_the_augmentation(view, preset):
    street = records([street_scene(np.random.default_rng(2)) for _ in range(10)], 512)
    choice = choose_augment(load_config(None, [f"data.view={view}"]), street)
    assert choice.value == preset and f"data.view={view}" in choice.reason


def test_pinned_values_are_never_touched():
    data = dataset((6, 10), 512)  # data that would move every auto value
    pins = ["model.image_size=256", "model.min_level=3", "model.max_level=7", "data.augment=default", "data.tiling=off"]
    config, choices = fitted(data, *pins)
    assert choices == []
    assert (config.model.image_size, config.model.min_level, config.model.max_level) == (256, 3, 7)
    assert config.data.augment == "default"


def chosen_reason(choices, key: str) -> str:
    return next(c.reason for c in choices if c.key == key)
