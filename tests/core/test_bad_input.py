"""User input errors raise ValueError naming the value at fault."""

from __future__ import annotations

import pytest
import torch

import effdet_core as E

from .conftest import tiny_config


@pytest.fixture(scope="module")
def trainer():
    return E.EfficientDetForTraining(E.create_model(tiny_config(), num_classes=3))


def _target(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}


def test_unknown_variant_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown EfficientDet variant 'd9'.*'d0'.*'d7x'.*'lite4'"):
        E.get_config("d9")


def test_unknown_override_lists_fields():
    with pytest.raises(ValueError, match=r"unknown EfficientDetConfig field\(s\) \['bifpn_width'\].*fpn_channels"):
        E.create_model("d0", num_classes=3, bifpn_width=64)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("fusion", "max", r"fusion='max' not supported; choose one of \['fast', 'softmax', 'sum'\]"),
        ("feature_network", "nasfpn", r"feature_network='nasfpn' not supported"),
        ("fpn_repeats", 0, r"fpn_repeats must be >= 1, got 0"),
    ],
)
def test_bad_config_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**{field: value})


def test_image_size_not_divisible_by_max_stride():
    with pytest.raises(ValueError, match=r"image_size \(500, 500\) must be .*divisible by 2\*\*max_level = 128"):
        E.get_config("d0", image_size=500)
    model = E.create_model(tiny_config(), num_classes=3)
    with pytest.raises(ValueError, match=r"input size 192x200 is not divisible by 2\*\*max_level = 128"):
        model(torch.randn(1, 3, 192, 200))


@pytest.mark.parametrize(
    "box,problem",
    [
        ([40.0, 40.0, 40.0, 60.0], "degenerate"),
        ([50.0, 10.0, 20.0, 30.0], "degenerate"),
        ([10.0, 10.0, 140.0, 60.0], "outside the 128x128 image"),
        ([-20.0, 10.0, 40.0, 60.0], "outside the 128x128 image"),
        ([float("nan"), 10.0, 40.0, 60.0], "not finite"),
    ],
)
def test_bad_box_names_image_and_box(trainer, box, problem):
    images = torch.randn(2, 3, 128, 128)
    targets = [_target([[1.0, 1.0, 30.0, 30.0]], [0]), _target([[5.0, 5.0, 50.0, 50.0], box], [1, 2])]
    with pytest.raises(ValueError, match=rf"target of image 1, box 1: .*{problem}"):
        trainer(images, targets)


def test_label_out_of_range(trainer):
    targets = [_target([[1.0, 1.0, 30.0, 30.0], [2.0, 2.0, 40.0, 40.0]], [0, 3])]
    with pytest.raises(ValueError, match=r"target of image 0, box 1: .* label 3 has a label outside \[0, 3\)"):
        trainer(torch.randn(1, 3, 128, 128), targets)


def test_missing_backbone_weights_file_is_named():
    with pytest.raises(ValueError, match=r"pretrained_backbone='/nonexistent/w.pth' is neither a file"):
        E.create_model(tiny_config(), num_classes=3, pretrained_backbone="/nonexistent/w.pth")
