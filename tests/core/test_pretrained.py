"""Pretrained backbone weights from local files only: the Lite0/1/2 ImageNet packages, a saved file, timm's cache."""

from __future__ import annotations

import pytest
import torch

import effdet_core as E
from effdet_core.backbone import _packaged_state_dict


@pytest.mark.parametrize(("variant", "last_block"), [("lite0", 15), ("lite1", 20), ("lite2", 20)])
def test_packaged_imagenet_weights_load_into_the_backbone(variant, last_block):
    model = E.create_model(variant, num_classes=3, image_size=256, pretrained_backbone="imagenet")
    source = _packaged_state_dict(model.config.backbone)
    torch.testing.assert_close(model.backbone.conv_stem.weight, source["_conv_stem.weight"])
    last = [k for k in source if k.startswith(f"_blocks.{last_block}._project_conv")][0]
    torch.testing.assert_close(model.backbone.blocks[6][-1].conv_pwl.weight, source[last])
    assert not any(k.startswith(f"_blocks.{last_block + 1}.") for k in source)  # that was the last block


def test_packaged_weights_name_the_backbones_that_have_them():
    with pytest.raises(ValueError, match=r"no weights for the 'tf_efficientnet_b0' backbone.*tf_efficientnet_lite1"):
        E.create_model("d0", num_classes=3, image_size=256, pretrained_backbone="imagenet")
    with pytest.raises(ValueError, match=r"'lite1-imagenet' has no weights for the 'tf_efficientnet_lite0'"):
        E.create_model("lite0", num_classes=3, image_size=256, pretrained_backbone="lite1-imagenet")
    model = E.create_model("lite1", num_classes=3, image_size=256, pretrained_backbone="lite1-imagenet")
    assert model.config.backbone == "tf_efficientnet_lite1"


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
