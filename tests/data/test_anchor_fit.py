"""Anchors against a dataset's boxes: the fast best-anchor IoU, `anchor_scale: auto` on a planted small-object set,
fitted aspect ratios, and `data analyze`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from effdet_core import generate_anchors, get_config
from effdet_core.box_coder import pairwise_iou
from pipeline.config import load_config
from pipeline.data.analyze import analyze, report_lines, resolve_auto_anchors
from pipeline.data.anchor_fit import best_anchor_iou, coverage, fit_anchor_scale, fit_aspect_ratios


def random_boxes(n: int, side: int, seed: int, sizes=(2.0, 300.0), aspect=(0.3, 3.0)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-10, side + 10, (n, 2))
    size = np.exp(rng.uniform(np.log(sizes[0]), np.log(sizes[1]), (n, 1)))
    ratio = np.exp(rng.uniform(np.log(aspect[0]), np.log(aspect[1]), (n, 1)))
    wh = np.concatenate([size * np.sqrt(ratio), size / np.sqrt(ratio)], axis=1)
    return np.concatenate([centre - wh / 2, centre + wh / 2], axis=1).astype(np.float32)


@pytest.mark.parametrize(
    "config",
    [
        get_config("lite0", image_size=(256, 256)),
        get_config("lite0"),  # the official uneven 320 px: fractional strides on the upper levels
        get_config("d0", image_size=(384, 384), anchor_scale=1.7, aspect_ratios=((0.5, 2.0), (1.0, 1.0))),
    ],
)
def test_fast_best_anchor_iou_equals_every_pair(config):
    boxes = random_boxes(400, config.image_size[0], seed=1)
    anchors = generate_anchors(config, config.image_size)
    every_pair = pairwise_iou(torch.from_numpy(boxes)[None], anchors)[0].max(dim=1).values.numpy()
    np.testing.assert_allclose(best_anchor_iou(boxes, config), every_pair, atol=1e-5)


def test_auto_anchor_scale_covers_a_planted_small_object_set():
    """Boxes of 10-20 px at 256 px: Lite0's official scale 3 (smallest anchor 24 px) covers few of them, each with few
    positives. (A stride-8 grid cannot cover them all at any scale: a box centred between anchor centres loses IoU.)"""
    config = get_config("lite0", image_size=(256, 256))
    boxes = random_boxes(2000, 256, seed=2, sizes=(10.0, 20.0), aspect=(0.8, 1.25))
    scale, table = fit_anchor_scale(boxes, config)
    by_scale = {c.scale: c for c in table}
    official, fitted = by_scale[3.0], by_scale[scale]
    assert official.covered < 0.3 and fitted.covered > official.covered + 0.3
    assert fitted.positives > official.positives and scale < 2.5
    assert fitted.covered == pytest.approx(coverage(boxes, config.replace(anchor_scale=scale)))


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_fitted_scale_never_covers_fewer_boxes_nor_gives_fewer_positives(seed):
    """The fit trades nothing away: against the official scale it keeps coverage and adds positives per box."""
    config = get_config("lite0", image_size=(512, 512))
    rng = np.random.default_rng(seed)
    low = float(rng.uniform(8, 60))
    boxes = random_boxes(1500, 512, seed=seed, sizes=(low, low * float(rng.uniform(2, 8))))
    scale, table = fit_anchor_scale(boxes, config)
    by_scale = {c.scale: c for c in table}
    assert by_scale[scale].covered >= by_scale[3.0].covered - 0.005
    assert by_scale[scale].positives >= by_scale[3.0].positives


def test_aspect_ratios_are_fitted_only_when_they_cover_more():
    config = get_config("lite0", image_size=(256, 256))
    tall = random_boxes(1500, 256, seed=4, sizes=(20.0, 80.0), aspect=(0.15, 0.25))  # pedestrians, bottles
    ratios = fit_aspect_ratios(tall, config)
    assert ratios is not None and max(ratios) < 0.3
    from effdet_core.config import aspect_ratio_pairs

    assert coverage(tall, config.replace(aspect_ratios=aspect_ratio_pairs(ratios))) > coverage(tall, config) + 0.2
    square = random_boxes(1500, 256, seed=5, sizes=(30.0, 80.0), aspect=(0.95, 1.05))
    assert fit_aspect_ratios(square, config) is None


@pytest.fixture(scope="module")
def small_object_dataset(tmp_path_factory):
    """A dataset of tiny boxes (4-9 px in 128 px images): the planted small-object set."""
    from pipeline.data import write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path_factory.mktemp("small") / "d", num_images=12, size=128, val_fraction=0.25)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        path = root / "annotations" / f"{split}.json"
        data = json.loads(path.read_text())
        annotations = []
        for image in data["images"]:
            for _ in range(20):
                side = float(rng.uniform(4, 9))
                x, y = rng.uniform(0, 128 - side, 2)
                annotations.append(
                    {"id": len(annotations) + 1, "image_id": image["id"], "category_id": 1, "bbox": [x, y, side, side]}
                )
        path.write_text(json.dumps({**data, "annotations": annotations}))
    return root


def test_analyze_reports_and_auto_resolves_the_scale(small_object_dataset):
    config = load_config(
        None,
        [
            f"data.dir={small_object_dataset}",
            "model.image_size=256",  # boxes of 8-18 px at the model input
            "model.pretrained_backbone=null",
            "model.anchor_scale=auto",
            "model.anchor_ratios=auto",
            "model.min_level=3",  # the official levels: the analysis is of the anchors alone
            "model.max_level=7",
            "data.augment=default",
        ],
    )
    analysis = analyze(config)
    assert analysis.nominal.uncovered > 0.8  # official Lite0 anchors: few of these boxes are covered
    text = "\n".join(report_lines(analysis))
    assert "no anchor at IoU >= 0.5" in text and "P3" in text and "advice:" in text
    assert "model.anchor_scale=" in text  # the advice names the fix
    fitted = resolve_auto_anchors(config, analysis)
    assert fitted.model.anchor_scale == analysis.fitted_scale < 2
    assert isinstance(fitted.model.anchor_ratios, tuple) and not fitted.model.needs_fit
    nominal, _ = analysis.coverage(fitted.model.resolve())
    assert nominal > analysis.nominal.covered + 0.3
