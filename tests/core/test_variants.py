"""Official variants: compound-scaling table, parameter counts and FLOPs against the paper's figures."""

from __future__ import annotations

import pytest
import torch

import effdet_core as E

# variant: (params in millions, FLOPs in billions of multiply-adds), from the official table (num_classes=90)
OFFICIAL = {
    "d0": (3.9, 2.54),
    "d1": (6.6, 6.10),
    "d2": (8.1, 11.0),
    "d3": (12.0, 24.9),
    "d4": (20.7, 55.2),
    "d5": (33.7, 130.0),
    "d6": (51.9, 226.0),
    "d7": (51.9, 325.0),
    "d7x": (77.0, 410.0),
}


@pytest.mark.parametrize("variant", list(OFFICIAL))
def test_params_and_flops_match_official_table(variant):
    config = E.get_config(variant)
    with torch.device("meta"):
        model = E.create_model(config, num_classes=90)
    params_m = E.count_parameters(model) / 1e6
    flops_b = E.count_flops(config) / 1e9
    official_params, official_flops = OFFICIAL[variant]
    assert params_m == pytest.approx(official_params, rel=0.01), f"{variant}: {params_m:.3f}M params"
    assert flops_b == pytest.approx(official_flops, rel=0.05), f"{variant}: {flops_b:.2f}B FLOPs"


# EfficientDet-Lite (automl's efficientdet/lite README): input px, params in millions (COCO, 90 classes)
OFFICIAL_LITE = {"lite0": (320, 3.2), "lite1": (384, 4.2), "lite2": (448, 5.3), "lite3": (512, 8.4),
                 "lite3x": (640, 9.3), "lite4": (640, 15.1)}  # fmt: skip


@pytest.mark.parametrize("variant", list(OFFICIAL_LITE))
def test_lite_params_match_the_official_table_and_the_reference_exactly(variant):
    import effdet

    with torch.device("meta"):
        ours = E.create_model(variant, num_classes=90)
        reference = effdet.create_model(f"tf_efficientdet_{variant}", pretrained_backbone=False, num_classes=90)
    size, official_params = OFFICIAL_LITE[variant]
    assert ours.config.image_size == (size, size)
    assert E.count_parameters(ours) / 1e6 == pytest.approx(official_params, rel=0.02)
    assert E.count_parameters(ours) == sum(p.numel() for p in reference.parameters())


def test_table_deviations_from_formulas():
    assert E.get_config("d7").backbone == E.get_config("d6").backbone == "tf_efficientnet_b6"
    assert E.get_config("d7").anchor_scale == 5.0 and E.get_config("d6").anchor_scale == 4.0
    assert E.get_config("d7x").max_level == 8 and E.get_config("d7").max_level == 7
    assert [E.get_config(f"d{i}").fusion for i in range(8)] == ["fast"] * 6 + ["sum"] * 2
    assert E.get_config("d5").fpn_repeats == 7 and E.formula_scaling(5)["fpn_repeats"] == 8
    lite = E.get_config("lite0")
    assert (lite.act, lite.fusion, lite.mean) == ("relu6", "sum", (0.5, 0.5, 0.5))


def test_names_accept_effdet_spelling():
    assert E.get_config("tf_efficientdet_d3") == E.get_config("d3")


def test_custom_scaling_builds_and_runs():
    config = E.scaled_config(1, width=40, depth=2, head_depth=2, image_size=256, backbone="tf_efficientnet_b0")
    model = E.create_model(config, num_classes=5).eval()
    classes, boxes = model(torch.randn(1, 3, 256, 256))
    assert [c.shape[-1] for c in classes] == [32, 16, 8, 4, 2]
    assert classes[0].shape[1] == 9 * 5 and boxes[0].shape[1] == 9 * 4
    assert model.config.fpn_channels == 40 and len(model.neck.cells) == 2 and len(model.class_head.convs) == 2


def test_uneven_official_lite_size_runs_with_matching_anchors():
    model = E.create_model("lite0", num_classes=3).eval()
    classes, _ = model(torch.randn(1, 3, 320, 320))
    assert [c.shape[-1] for c in classes] == [40, 20, 10, 5, 3]
    total = sum(c.shape[-1] * c.shape[-2] for c in classes) * model.config.num_anchors
    assert E.generate_anchors(model.config, (320, 320)).shape == (total, 4)
