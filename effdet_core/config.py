"""EfficientDet model configuration: one frozen dataclass per detector, the official variants and compound scaling.

The named variants are the official TF-padding models (`effdet` calls them `tf_efficientdet_*`), including
the table's deviations from the scaling formulas (capped depth/resolution for D5-D7, B6 reused by D7,
plain-sum fusion for D6+ and the Lite models, anchor scale 5 for D7, a P8 level for D7x).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)

FUSION_METHODS = ("fast", "softmax", "sum")
FEATURE_NETWORKS = ("bifpn", "panet", "fpn")
ACTIVATIONS = ("swish", "relu6", "relu")
NORMS = ("batchnorm",)


@dataclass(frozen=True)
class LossConfig:
    """The detection loss: focal classification (alpha, gamma), Huber box regression, anchor matching."""

    alpha: float = 0.25
    gamma: float = 1.5
    delta: float = 0.1  # Huber transition point, in box-code units
    box_loss_weight: float = 50.0
    label_smoothing: float = 0.0
    match_threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1 or self.gamma < 0 or self.delta <= 0 or self.box_loss_weight < 0:
            raise ValueError(f"invalid loss settings {self}")
        if not 0 <= self.label_smoothing < 1 or not 0 < self.match_threshold <= 1:
            raise ValueError(f"invalid loss settings {self}")


@dataclass(frozen=True)
class EfficientDetConfig:
    """Everything that defines one detector's architecture and anchors (not its loss or post-processing)."""

    name: str
    backbone: str  # timm model name, features-only mode (e.g. "tf_efficientnet_b0")
    image_size: tuple[int, int]  # (height, width); both divisible by 2**max_level
    fpn_channels: int  # BiFPN width W
    fpn_repeats: int  # BiFPN depth D (number of cells)
    head_repeats: int  # class/box net depth (conv layers before the prediction layer)
    min_level: int = 3
    max_level: int = 7
    num_scales: int = 3
    aspect_ratios: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))
    anchor_scale: float = 4.0
    fusion: str = "fast"  # fast normalized | softmax | plain sum
    feature_network: str = "bifpn"
    act: str = "swish"
    norm: str = "batchnorm"
    bn_momentum: float = 0.01  # PyTorch sense (TF's 0.99)
    bn_eps: float = 1e-3
    backbone_drop_path_rate: float = 0.2
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    backbone_out_indices: tuple[int, ...] = field(default=(2, 3, 4))
    # The official Lite0/Lite2 sizes (320, 448) do not divide by 2**max_level: their feature maps are
    # ceil-halved (P7 of a 320 input is 3x3) with anchors on the matching fractional strides. Any other config
    # must use a divisible size, so a mistyped size fails loudly instead of silently misaligning anchors.
    allow_uneven_levels: bool = False

    def __post_init__(self) -> None:
        size = self.image_size
        if isinstance(size, int):
            size = (size, size)
        object.__setattr__(self, "image_size", tuple(int(s) for s in size))
        object.__setattr__(self, "aspect_ratios", tuple(tuple(float(v) for v in a) for a in self.aspect_ratios))
        self._validate()

    def _validate(self) -> None:
        _choice("fusion", self.fusion, FUSION_METHODS)
        _choice("feature_network", self.feature_network, FEATURE_NETWORKS)
        _choice("act", self.act, ACTIVATIONS)
        _choice("norm", self.norm, NORMS)
        for key in ("fpn_channels", "fpn_repeats", "head_repeats", "num_scales"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)} (config {self.name!r})")
        if not self.anchor_scale > 0 or not self.aspect_ratios or any(v <= 0 for a in self.aspect_ratios for v in a):
            raise ValueError(
                f"anchor_scale {self.anchor_scale} and aspect_ratios {self.aspect_ratios} must be positive "
                f"(config {self.name!r})"
            )
        num_backbone_levels = len(self.backbone_out_indices)
        if not 1 <= self.min_level <= self.max_level or self.max_level < self.min_level + num_backbone_levels - 1:
            raise ValueError(
                f"levels P{self.min_level}-P{self.max_level} must cover the {num_backbone_levels} backbone levels "
                f"(config {self.name!r})"
            )
        stride = 2**self.max_level
        uneven = any(s % stride for s in self.image_size) and not self.allow_uneven_levels
        if len(self.image_size) != 2 or any(s <= 0 for s in self.image_size) or uneven:
            raise ValueError(
                f"image_size {self.image_size} must be positive and divisible by 2**max_level = {stride} "
                f"(config {self.name!r}); e.g. {_round_up(self.image_size[0], stride)}"
            )

    @property
    def num_levels(self) -> int:
        return self.max_level - self.min_level + 1

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location."""
        return self.num_scales * len(self.aspect_ratios)

    def replace(self, **overrides) -> EfficientDetConfig:
        """A copy with some fields changed; unknown field names raise with the list of valid ones.

        Changing the pyramid levels also picks the backbone stages that feed them (unless
        `backbone_out_indices` is given too): see `backbone_indices_for_levels`.
        """
        valid = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ValueError(f"unknown EfficientDetConfig field(s) {unknown}; valid fields: {sorted(valid)}")
        levels_changed = {"min_level", "max_level"} & set(overrides)
        if levels_changed and "backbone_out_indices" not in overrides:
            min_level = overrides.get("min_level", self.min_level)
            max_level = overrides.get("max_level", self.max_level)
            overrides["backbone_out_indices"] = backbone_indices_for_levels(min_level, max_level)
        return dataclasses.replace(self, **overrides)


BACKBONE_LEVELS = 5  # EfficientNet's stages reduce 2, 4, 8, 16, 32: stage index i has stride 2**(i + 1)


def backbone_indices_for_levels(min_level: int, max_level: int) -> tuple[int, ...]:
    """The backbone stages (timm `out_indices`) that give levels min_level..min(max_level, 5); the levels above 5
    are made by the feature network (stride-2 pooling), as P6 and P7 officially are."""
    if not 1 <= min_level <= BACKBONE_LEVELS or max_level < min_level:
        raise ValueError(
            f"levels P{min_level}-P{max_level}: need 1 <= min_level <= {BACKBONE_LEVELS} and max_level >= min_level"
        )
    return tuple(range(min_level - 1, min(max_level, BACKBONE_LEVELS)))


def aspect_ratio_pairs(ratios: tuple[float, ...]) -> tuple[tuple[float, float], ...]:
    """Width/height ratios (e.g. 0.5, 1, 2) -> the (x, y) anchor multipliers of the official config, of unit area."""
    if not ratios or any(not r > 0 for r in ratios):
        raise ValueError(f"anchor aspect ratios must be positive width/height values, got {list(ratios)}")
    return tuple((math.sqrt(r), 1.0 / math.sqrt(r)) for r in ratios)


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{key}={value!r} not supported; choose one of {list(choices)}")


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


# (input px, backbone, W_bifpn, D_bifpn, D_head, extra fields) straight from the official table.
_D_TABLE: dict[str, tuple[int, str, int, int, int, dict]] = {
    "d0": (512, "tf_efficientnet_b0", 64, 3, 3, {}),
    "d1": (640, "tf_efficientnet_b1", 88, 4, 3, {}),
    "d2": (768, "tf_efficientnet_b2", 112, 5, 3, {}),
    "d3": (896, "tf_efficientnet_b3", 160, 6, 4, {}),
    "d4": (1024, "tf_efficientnet_b4", 224, 7, 4, {}),
    "d5": (1280, "tf_efficientnet_b5", 288, 7, 4, {}),
    "d6": (1280, "tf_efficientnet_b6", 384, 8, 5, {"fusion": "sum"}),
    "d7": (1536, "tf_efficientnet_b6", 384, 8, 5, {"fusion": "sum", "anchor_scale": 5.0}),
    "d7x": (1536, "tf_efficientnet_b7", 384, 8, 5, {"fusion": "sum", "max_level": 8}),
}
_LITE_COMMON = {"fusion": "sum", "act": "relu6", "mean": LITE_MEAN, "std": LITE_STD}
_LITE_TABLE: dict[str, tuple[int, str, int, int, int, dict]] = {
    "lite0": (
        320,
        "tf_efficientnet_lite0",
        64,
        3,
        3,
        {"anchor_scale": 3.0, "backbone_drop_path_rate": 0.0, "allow_uneven_levels": True},
    ),
    "lite1": (384, "tf_efficientnet_lite1", 88, 4, 3, {"anchor_scale": 3.0}),
    "lite2": (448, "tf_efficientnet_lite2", 112, 5, 3, {"anchor_scale": 3.0, "allow_uneven_levels": True}),
    "lite3": (512, "tf_efficientnet_lite3", 160, 6, 4, {}),
    "lite3x": (640, "tf_efficientnet_lite3", 200, 6, 4, {"anchor_scale": 3.0}),
    "lite4": (640, "tf_efficientnet_lite4", 224, 7, 4, {}),
}


def _build_variants() -> dict[str, EfficientDetConfig]:
    variants = {}
    for table, common in ((_D_TABLE, {}), (_LITE_TABLE, _LITE_COMMON)):
        for name, (size, backbone, width, depth, head, extra) in table.items():
            variants[name] = EfficientDetConfig(
                name=name,
                backbone=backbone,
                image_size=(size, size),
                fpn_channels=width,
                fpn_repeats=depth,
                head_repeats=head,
                **{**common, **extra},
            )
    return variants


VARIANTS: dict[str, EfficientDetConfig] = _build_variants()


def get_config(variant: str, **overrides) -> EfficientDetConfig:
    """The official configuration of a named variant, optionally with some fields replaced."""
    key = variant.lower().removeprefix("tf_efficientdet_").removeprefix("efficientdet_")
    if key not in VARIANTS:
        raise ValueError(f"unknown EfficientDet variant {variant!r}; valid variants: {list(VARIANTS)}")
    config = VARIANTS[key]
    return config.replace(**overrides) if overrides else config


def scaled_config(
    phi: int,
    *,
    width: int | None = None,
    depth: int | None = None,
    head_depth: int | None = None,
    image_size: int | tuple[int, int] | None = None,
    backbone: str | None = None,
    **overrides,
) -> EfficientDetConfig:
    """A compound-scaled detector: the official D{phi} with any of width, depth, head depth, size or backbone changed.

    phi 0-7 follows the official table; any explicit argument replaces the table's value, which is how a
    scaling search explores points between and beyond the published variants.
    """
    if not 0 <= phi <= 7:
        raise ValueError(f"phi={phi} outside the official range 0..7")
    base = VARIANTS[f"d{phi}"]
    changes = {
        "name": f"d{phi}-custom"
        if any(v is not None for v in (width, depth, head_depth, image_size, backbone)) or overrides
        else base.name
    }
    for key, value in (
        ("fpn_channels", width),
        ("fpn_repeats", depth),
        ("head_repeats", head_depth),
        ("image_size", image_size),
        ("backbone", backbone),
    ):
        if value is not None:
            changes[key] = value
    return base.replace(**changes, **overrides)


def formula_scaling(phi: float) -> dict[str, int]:
    """The paper's scaling formulas (before the official table's rounding and caps), for reference and search."""
    return {
        "fpn_channels": int(round(64 * 1.35**phi / 8) * 8),
        "fpn_repeats": int(3 + phi),
        "head_repeats": int(3 + math.floor(phi / 3)),
        "image_size": int(512 + 128 * phi),
    }
