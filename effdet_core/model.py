"""The EfficientDet network (backbone -> feature network -> class/box heads) and its factory."""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from .backbone import create_backbone
from .config import EfficientDetConfig, get_config
from .head import HeadNet
from .neck import FeatureNetwork

PRIOR_PROBABILITY = 0.01


class EfficientDet(nn.Module):
    """Images [B, 3, H, W] (normalised with config.mean/std) -> (class_outputs, box_outputs).

    Each output is a list over levels min_level..max_level of [B, A*num_classes, H/2^l, W/2^l] and
    [B, A*4, H/2^l, W/2^l]; box channels per anchor are (ty, tx, th, tw) relative to the anchor.
    """

    def __init__(
        self, config: EfficientDetConfig, num_classes: int, pretrained_backbone: str | os.PathLike | None = None
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.config = config
        self.num_classes = num_classes
        self.backbone = create_backbone(
            config.backbone,
            out_indices=config.backbone_out_indices,
            drop_path_rate=config.backbone_drop_path_rate,
            pretrained=pretrained_backbone,
        )
        reductions = self.backbone.feature_info.reduction()
        expected = [2**level for level in range(config.min_level, config.min_level + len(reductions))]
        if reductions != expected:
            raise ValueError(
                f"backbone {config.backbone!r} out_indices {config.backbone_out_indices} give strides "
                f"{reductions}, expected {expected} for min_level {config.min_level}"
            )
        norm = {"momentum": config.bn_momentum, "eps": config.bn_eps}
        self.neck = FeatureNetwork(
            self.backbone.feature_info.channels(),
            kind=config.feature_network,
            min_level=config.min_level,
            max_level=config.max_level,
            width=config.fpn_channels,
            repeats=config.fpn_repeats,
            fusion=config.fusion,
            act=config.act,
            **norm,
        )
        head = {
            "width": config.fpn_channels,
            "repeats": config.head_repeats,
            "num_levels": config.num_levels,
            "num_anchors": config.num_anchors,
            "act": config.act,
            **norm,
        }
        self.class_head = HeadNet(outputs_per_anchor=num_classes, prior_probability=PRIOR_PROBABILITY, **head)
        self.box_head = HeadNet(outputs_per_anchor=4, **head)
        _init_feature_network(self.neck)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        check_image_size(images, self.config)
        features = self.neck(self.backbone(images))
        return self.class_head(features), self.box_head(features)


def _init_feature_network(neck: nn.Module) -> None:
    """Official init of the feature network: Glorot-uniform convs (depthwise fan counted per group), zero bias."""
    for module in neck.modules():
        if isinstance(module, nn.Conv2d):
            receptive = module.kernel_size[0] * module.kernel_size[1]
            fan_in = module.in_channels // module.groups * receptive
            fan_out = module.out_channels // module.groups * receptive
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            nn.init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def check_image_size(images: torch.Tensor, config: EfficientDetConfig) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
    stride = 2**config.max_level
    height, width = images.shape[-2:]
    if (height % stride or width % stride) and not config.allow_uneven_levels:
        raise ValueError(
            f"input size {height}x{width} is not divisible by 2**max_level = {stride} (model {config.name!r})"
        )


def create_model(
    variant_or_config: str | EfficientDetConfig,
    num_classes: int,
    pretrained_backbone: str | os.PathLike | None = None,
    **overrides,
) -> EfficientDet:
    """Builds a detector from a variant name ("d0".."d7x", "lite0".."lite4") or a config, with field overrides.

    Example: `create_model("d0", num_classes=3, image_size=256, fpn_channels=48)`.
    """
    if isinstance(variant_or_config, EfficientDetConfig):
        config = variant_or_config.replace(**overrides) if overrides else variant_or_config
    else:
        config = get_config(variant_or_config, **overrides)
    return EfficientDet(config, num_classes, pretrained_backbone=pretrained_backbone)
