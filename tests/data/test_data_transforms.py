"""Property-based tests of the training and evaluation transforms (boxes stay valid, always), and augmentation as
configuration: presets, step lists and the dataset-bounded scale jitter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import ConfigError, load_config
from pipeline.config.augment import PRESETS, parse_augment
from pipeline.data import AugmentOptions, DetectionTransform

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EDGE = st.sampled_from([-5.0, -0.0, 0.0, 0.5, 1.0, 0.999, 1.0001, 1.5])  # fractions of the side, incl. outside


@st.composite
def image_and_boxes(draw):
    """An image of random size with random boxes: degenerate, on the border, outside, tiny, huge."""
    height, width = draw(st.integers(1, 160)), draw(st.integers(1, 160))
    n = draw(st.integers(0, 8))
    fraction = st.one_of(EDGE, st.floats(-0.3, 1.3, allow_nan=False))
    coords = np.array([[draw(fraction) for _ in range(4)] for _ in range(n)], dtype=np.float32).reshape(-1, 4)
    boxes = coords * np.array([width, height, width, height], dtype=np.float32)
    boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], axis=1)
    labels = np.array([draw(st.integers(0, 4)) for _ in range(n)], dtype=np.int64)
    pixels = np.random.default_rng(n).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return pixels, boxes, labels


options_strategy = st.builds(
    lambda lo, span, flip, vflip, visibility, min_size: AugmentOptions(
        scale_min=lo,
        scale_max=lo + span,
        hflip_prob=flip,
        vflip_prob=vflip,
        min_visibility=visibility,
        min_box_size=min_size,
        color_prob=0.5,
        brightness=0.2,
    ),
    st.floats(0.1, 1.5),
    st.floats(0.0, 1.0),
    st.sampled_from([0.0, 0.5, 1.0]),
    st.sampled_from([0.0, 0.5, 1.0]),
    st.sampled_from([0.0, 0.25, 0.9]),
    st.sampled_from([0.0, 1.0, 4.0]),
)


def assert_valid(boxes: np.ndarray, labels: np.ndarray, height: int, width: int, min_size: float = 0.0) -> None:
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert labels.dtype == np.int64 and labels.shape == (len(boxes),)
    assert np.isfinite(boxes).all()
    x1, y1, x2, y2 = boxes.T
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= width).all() and (y2 <= height).all()
    assert (x2 > x1).all() and (y2 > y1).all()
    assert (x2 - x1 >= min_size).all() and (y2 - y1 >= min_size).all()


@SETTINGS
@given(sample=image_and_boxes(), options=options_strategy, size=st.sampled_from([(64, 64), (64, 96), (128, 64)]))
def test_train_transform_never_produces_an_invalid_box(sample, options, size):
    pixels, boxes, labels = sample
    transform = DetectionTransform(size, train=True, options=options, seed=0)
    image, out_boxes, out_labels, scale = transform(pixels, boxes, labels)
    assert image.shape == (3, *size) and image.dtype.is_floating_point and image.isfinite().all()
    assert_valid(out_boxes, out_labels, *size, min_size=options.min_box_size)
    assert set(out_labels.tolist()) <= set(labels.tolist())
    assert scale == pytest.approx(min(size[0] / pixels.shape[0], size[1] / pixels.shape[1]))


@SETTINGS
@given(sample=image_and_boxes(), options=options_strategy, rotate=st.sampled_from([0.5, 1.0]))
def test_rotations_and_flips_keep_every_box_valid(sample, options, rotate):
    """The `aerial` kind of augmentation: 90-degree rotations on a square input, with flips and jitter."""
    pixels, boxes, labels = sample
    options = AugmentOptions.from_dict({**options.__dict__, "rotate90_prob": rotate})
    image, out_boxes, out_labels, _ = DetectionTransform(96, train=True, options=options, seed=3)(pixels, boxes, labels)
    assert image.shape == (3, 96, 96)
    assert_valid(out_boxes, out_labels, 96, 96, min_size=options.min_box_size)


def test_rotation_turns_a_box_with_the_image():
    options = AugmentOptions(rotate90_prob=1.0)
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[8:20, 4:40] = 255  # a wide white bar: its box must turn with it
    boxes = np.array([[4, 8, 40, 20]], np.float32)
    for seed in range(8):
        image, out, _, _ = DetectionTransform(64, train=True, options=options, seed=seed)(pixels, boxes, [0])
        white = (image > 0.5).all(dim=0).nonzero()  # [k, 2] (y, x) of white pixels
        y1, x1 = white.min(dim=0).values.tolist()
        y2, x2 = white.max(dim=0).values.tolist()
        np.testing.assert_allclose(out[0], [x1, y1, x2 + 1, y2 + 1], atol=1.0)


@SETTINGS
@given(sample=image_and_boxes(), size=st.sampled_from([(64, 64), (64, 128)]))
def test_eval_transform_keeps_boxes_and_maps_back(sample, size):
    pixels, boxes, _ = sample
    labels = np.arange(len(boxes))  # unique labels identify each box after the transform
    height, width = pixels.shape[:2]
    image, out_boxes, out_labels, scale = DetectionTransform(size)(pixels, boxes, labels)
    assert image.shape == (3, *size)
    assert_valid(out_boxes, out_labels, *size)
    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    sides = clipped[:, 2:] - clipped[:, :2]  # [n, 2] original px
    valid = (sides > 0).all(axis=1)
    big = (sides * scale >= 0.5).all(axis=1)  # at least half a model-input px: must survive
    assert set(np.flatnonzero(big)) <= set(out_labels.tolist()) <= set(np.flatnonzero(valid))
    # every kept box maps back to original px, up to the rounding of the resized sides (>= 1 px)
    resized = np.maximum(1, np.round(np.array([width, height]) * scale))  # [2] (w, h) after resizing
    error = np.abs(resized - np.array([width, height]) * scale) / scale  # [2] original px, 0.5 / scale usually
    atol = np.tile(error, 2) + 1e-3  # [4] x1, y1, x2, y2
    assert (np.abs(out_boxes / scale - clipped[out_labels]) <= atol).all()


def test_images_without_boxes_are_kept():
    pixels = np.zeros((30, 50, 3), np.uint8)
    for train in (False, True):
        image, boxes, labels, _ = DetectionTransform(64, train=train, seed=1)(pixels, np.zeros((0, 4)), [])
        assert image.shape == (3, 64, 64) and boxes.shape == (0, 4) and labels.shape == (0,)


def test_flip_mirrors_boxes_exactly_and_padding_is_zero_after_normalising():
    options = AugmentOptions(scale_min=1.0, scale_max=1.0, hflip_prob=1.0, color_prob=0.0)
    pixels = np.full((64, 64, 3), 200, np.uint8)
    boxes = np.array([[4, 8, 20, 30]], np.float32)
    _, out, _, _ = DetectionTransform(64, train=True, options=options)(pixels, boxes, [2])
    np.testing.assert_allclose(out, [[44, 8, 60, 30]], atol=1e-4)
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    white = np.full((32, 16, 3), 255, np.uint8)
    image, out, _, scale = DetectionTransform((64, 64), mean, std)(white, boxes / 4, [0])
    assert scale == 2.0 and image[:, :, 32:].abs().max() == pytest.approx(0.0, abs=1e-2)  # padded right half
    assert image[:, :, :32].min() == pytest.approx(1.0)  # white pixels -> (1 - 0.5) / 0.5


def test_augment_options_reject_bad_values():
    with pytest.raises(ValueError, match="scale_min"):
        AugmentOptions(scale_min=2.0, scale_max=1.0)
    with pytest.raises(ValueError, match="hflip_prob"):
        AugmentOptions(hflip_prob=1.5)
    with pytest.raises(ValueError, match=r"unknown augmentation options \['flip'\]"):
        AugmentOptions.from_dict({"flip": 0.5})
    assert AugmentOptions.from_dict({"hue": 0.1}).hue == 0.1


def test_presets_and_step_lists_resolve_to_options():
    default = parse_augment("default")
    assert (default.scale_min, default.scale_max, default.hflip_prob, default.color_prob) == (0.75, 1.25, 0.5, 0.8)
    aerial = parse_augment("aerial")
    assert aerial.vflip_prob == 0.5 and aerial.rotate90_prob == 0.75 and aerial.scale_min == 0.8
    assert parse_augment("none") == AugmentOptions()
    steps = parse_augment([{"scale": {"min": 0.8, "max": 1.2}}, "hflip", {"color": {"p": 0.3}}])
    assert (steps.scale_min, steps.scale_max, steps.hflip_prob, steps.color_prob) == (0.8, 1.2, 0.5, 0.3)
    assert parse_augment("strong").scale_min == 0.5
    assert set(PRESETS) == {"default", "strong", "aerial", "none"}


@pytest.mark.parametrize(
    ("augment", "message"),
    [
        ("heavy", "'heavy' is not a preset"),
        ("[{blur: {}}]", r"data.augment\[0\] unknown op 'blur'"),
        ("[hflip, {vflip: {q: 1}}]", r"data.augment\[1\] vflip: unknown parameter\(s\) \['q'\]"),
        ("[{hflip: {p: 2}}]", "hflip_prob must be in"),
        ("[{scale: {min: 1.5, max: 1.0}}]", "scale_min <= scale_max"),
        ("[hflip, hflip]", r"\[1\] 'hflip' appears twice"),
        ("[{hflip: {p: yes}}]", "expected a number"),
    ],
)
def test_bad_augmentation_config_is_refused_naming_the_step(augment, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"data.augment={augment}"])


def test_scale_jitter_is_bounded_by_the_datasets_small_boxes():
    options = parse_augment([{"scale": {"min": 0.5, "max": 1.5}}])  # keeping boxes at min_object_px = 8 or more
    assert options.bounded(small_box_px=40.0) == options  # 40 px boxes at 0.5x are 20 px: no bound needed
    bounded = options.bounded(small_box_px=10.0)  # 10 px boxes: zooming out below 0.8x would make them < 8 px
    assert bounded.scale_min == pytest.approx(0.8) and bounded.scale_max == 1.5
    assert options.bounded(small_box_px=4.0).scale_min == 1.0  # already tiny: never zoom out
    unbounded = parse_augment([{"scale": {"min": 0.5, "max": 1.5, "min_object_px": 0}}])
    assert unbounded.bounded(small_box_px=4.0).scale_min == 0.5


def test_every_augmentation_step_draws_from_one_random_stream():
    """albumentations' `set_random_seed` gives each step its own generator seeded alike, so an image's scale, crop,
    flip and colour draws were the same numbers: over 400 reseeded items the flip and the box width correlated
    (-0.33 measured). One shared stream: the steps draw independently (|corr| 0.02)."""
    transform = DetectionTransform(128, train=True, options=parse_augment("default"), seed=0)
    steps = transform.pipeline.transforms
    assert len({id(step.random_generator) for step in steps}) == len({id(step.py_random) for step in steps}) == 1
    image = np.full((128, 128, 3), 120, np.uint8)
    flips, widths = [], []
    for seed in range(400):
        transform.reseed(seed)
        _, boxes, _, _ = transform(image, np.array([[40, 40, 80, 80]], np.float32), np.array([0]))
        if len(boxes):
            flips.append(float(boxes[0, 0] + boxes[0, 2] > 128))  # the box's centre moved right: flipped
            widths.append(float(boxes[0, 2] - boxes[0, 0]))  # [px] the scale jitter
    assert len(widths) > 350 and 0.35 < np.mean(flips) < 0.65
    assert abs(np.corrcoef(flips, widths)[0, 1]) < 0.15
