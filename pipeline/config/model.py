"""`model:`: which EfficientDet to build; null fields keep the variant's official value, `auto` ones are fitted to
the training boxes before training (`pipeline.data.auto_fit`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from effdet_core.config import FEATURE_NETWORKS, FUSION_METHODS, VARIANTS, aspect_ratio_pairs
from pipeline.config.checks import ConfigError, at_least_or_null, check, choice

MODEL_VARIANTS = tuple(VARIANTS)  # effdet_core's named variants: one list for the whole project
_MODEL_OVERRIDE_KEYS = (
    "fpn_channels",
    "fpn_repeats",
    "head_repeats",
    "fusion",
    "feature_network",
    "backbone",
    "anchor_scale",
    "num_scales",
    "min_level",
    "max_level",
    "bn_momentum",
)
AUTO = "auto"  # a value fitted to the training boxes before training (`pipeline.data.auto_fit`)
AUTO_KEYS = ("image_size", "min_level", "max_level", "anchor_scale", "anchor_ratios")  # the keys that take it


@dataclass(frozen=True)
class ModelConfig:
    """Which EfficientDet to build; null fields keep the variant's official value."""

    variant: str = "lite0"
    # square input side, divisible by 2**max_level (128); null = official; auto: fitted to the training boxes (the
    # median box made 16 px at the input, the 10th percentile 8 px, within max_image_size; never below the
    # official size unless the images are smaller): pipeline/data/auto_fit.py
    image_size: int | str | None = AUTO
    max_image_size: int | None = None  # the largest size `image_size: auto` may choose; null = 2x the official
    # a weights file, "imagenet" (offline ImageNet weights: Lite0-2), "timm" (Hugging Face cache) or null (random)
    pretrained_backbone: str | None = "imagenet"
    fpn_channels: int | None = None  # BiFPN width W
    fpn_repeats: int | None = None  # BiFPN depth D (cells)
    head_repeats: int | None = None  # class/box net depth
    fusion: str | None = None  # fast | softmax | sum
    feature_network: str | None = None  # bifpn | panet | fpn
    backbone: str | None = None  # a timm EfficientNet name, e.g. tf_efficientnet_b1
    # anchors: null keeps the variant's official values; auto fits them to the training boxes before training
    anchor_scale: float | str | None = AUTO  # anchor side = anchor_scale * level stride (official: 4, Lite: 3)
    anchor_ratios: tuple[float, ...] | str | None = AUTO  # width/height ratios, e.g. [0.5, 1.0, 2.0]
    num_scales: int | None = None  # octave scales per level (official: 3)
    # pyramid levels P{min}..P{max} (official: 3..7, D7x 3..8); auto: a stride-4 level when it covers 5% more of the
    # training boxes, top levels dropped when they match almost none
    min_level: int | str | None = AUTO
    max_level: int | str | None = AUTO
    # BatchNorm momentum of the feature network and heads (PyTorch sense). The official 0.01 suits 300 epochs; in
    # runs of a few hundred steps its running statistics lag the weights they normalise (README "Recipe"). null =
    # the official value
    bn_momentum: float | None = 0.1

    def __post_init__(self) -> None:
        choice("model.variant", self.variant, MODEL_VARIANTS)
        for key in AUTO_KEYS:
            value = getattr(self, key)
            check(not isinstance(value, str) or value == AUTO, f"model.{key}", value, "must be a value, auto or null")
        check(
            not isinstance(self.anchor_scale, float) or self.anchor_scale > 0,
            "model.anchor_scale",
            self.anchor_scale,
            "must be > 0",
        )
        if isinstance(self.anchor_ratios, tuple):
            check(
                len(self.anchor_ratios) > 0 and all(r > 0 for r in self.anchor_ratios),
                "model.anchor_ratios",
                list(self.anchor_ratios),
                "must be a non-empty list of positive width/height ratios",
            )
        if self.fusion is not None:
            choice("model.fusion", self.fusion, FUSION_METHODS)
        if self.feature_network is not None:
            choice("model.feature_network", self.feature_network, FEATURE_NETWORKS)
        check(self.backbone is None or bool(self.backbone), "model.backbone", self.backbone, "must be a name or null")
        # divisibility by 2**max_level is effdet_core's rule (it allows the official uneven Lite sizes); it is
        # checked against the real model config by `pipeline.plan.job.resolve_job` (and each worker) before any training
        for key in ("image_size", "max_image_size"):
            value = getattr(self, key)
            check(not isinstance(value, int) or value > 0, f"model.{key}", value, "must be > 0")
        check(
            self.bn_momentum is None or 0 < self.bn_momentum <= 1,
            "model.bn_momentum",
            self.bn_momentum,
            "must be in (0, 1] or null",
        )
        for key in ("fpn_channels", "fpn_repeats", "head_repeats", "num_scales"):
            at_least_or_null(f"model.{key}", getattr(self, key), 1)
        for key in ("min_level", "max_level"):
            value = getattr(self, key)
            check(not isinstance(value, int) or value >= 1, f"model.{key}", value, "must be >= 1, auto or null")

    def build(self, num_classes: int, pretrained: bool = True):
        """The bare EfficientDet this config describes (pretrained backbone unless `pretrained=False`, e.g. when
        the weights come from a checkpoint)."""
        from effdet_core import create_model

        assert not self.needs_fit, "auto settings must be fitted (pipeline.data.auto_fit) before building"

        backbone = self.pretrained_backbone if pretrained else None
        return create_model(self.variant, num_classes, pretrained_backbone=backbone, **self.overrides())

    @property
    def needs_fit(self) -> bool:
        """Some setting is `auto`: fit it to the data (`pipeline.data.auto_fit`) before building."""
        return any(getattr(self, key) == AUTO for key in AUTO_KEYS)

    def overrides(self) -> dict[str, Any]:
        """The keyword overrides for `effdet_core.create_model` (only the fields that are set; `auto` values keep
        the variant's official ones until they are fitted)."""
        out: dict[str, Any] = {}
        if isinstance(self.image_size, int):
            out["image_size"] = (self.image_size, self.image_size)
        for key in _MODEL_OVERRIDE_KEYS:
            if getattr(self, key) not in (None, AUTO):
                out[key] = getattr(self, key)
        if isinstance(self.anchor_ratios, tuple):
            out["aspect_ratios"] = aspect_ratio_pairs(self.anchor_ratios)
        return out

    def resolve(self):
        """The `effdet_core.EfficientDetConfig` this describes, without building the network; every inconsistency
        (a size the levels cannot divide, weights that do not fit the backbone) is a ConfigError."""
        from effdet_core import get_config

        try:
            resolved = get_config(self.variant, **self.overrides())
        except ValueError as e:  # effdet_core names the field; say which config section it came from
            raise ConfigError(f"model: {e}") from None
        from effdet_core.backbone import check_backbone_weights

        try:
            check_backbone_weights(self.pretrained_backbone, resolved.backbone)
        except ValueError as e:
            raise ConfigError(f"model.{e} (model.variant={self.variant!r})") from None
        return resolved
