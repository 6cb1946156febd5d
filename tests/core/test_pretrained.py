"""Pretrained backbone weights from local files only: the Lite0 ImageNet package, a saved file, timm's cache."""

from __future__ import annotations

import pytest
import torch

import effdet_core as E
from effdet_core.backbone import _lite0_package_state_dict


def test_lite0_imagenet_weights_load_into_the_backbone():
    model = E.create_model("lite0", num_classes=3, image_size=256, pretrained_backbone="lite0-imagenet")
    source = _lite0_package_state_dict("tf_efficientnet_lite0")
    torch.testing.assert_close(model.backbone.conv_stem.weight, source["_conv_stem.weight"])
    last_block = [k for k in source if k.startswith("_blocks.15._project_conv")][0]
    torch.testing.assert_close(model.backbone.blocks[6][0].conv_pwl.weight, source[last_block])


def test_local_weights_file_round_trips(tmp_path):
    source = E.create_model("lite0", num_classes=3, image_size=256)
    path = tmp_path / "backbone.pth"
    torch.save(source.backbone.state_dict(), path)
    model = E.create_model("lite0", num_classes=3, image_size=256, pretrained_backbone=path)
    for (name, a), b in zip(source.backbone.state_dict().items(), model.backbone.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_weights_for_another_backbone_are_refused(tmp_path):
    path = tmp_path / "b1.pth"
    torch.save(E.create_model("d1", num_classes=3, image_size=256).backbone.state_dict(), path)
    with pytest.raises(ValueError, match="backbone weights do not fit"):
        E.create_model("d0", num_classes=3, image_size=256, pretrained_backbone=path)


def test_timm_weights_absent_from_cache_give_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match=r"no pretrained weights for 'tf_efficientnet_b0' in the local Hugging Face"):
        E.create_model("d0", num_classes=3, image_size=256, pretrained_backbone="timm")
