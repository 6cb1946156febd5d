"""Training augmentation as configuration: named presets, or a list of steps, resolved to `AugmentOptions`.

A step is a one-key mapping, `{op: {param: value}}`; ops and their parameters (defaults in brackets):

    scale:    {min: 0.75, max: 1.25, min_object_px: 8}
                                              scale jitter of the fitted image, then pad + random crop to the input;
                                              zooming out never shrinks the dataset's small boxes (its 10th
                                              percentile) below min_object_px (0: no bound)
    hflip:    {p: 0.5}                        horizontal flip
    vflip:    {p: 0.5}                        vertical flip
    rotate90: {p: 0.5}                        rotation by 90, 180 or 270 degrees
    color:    {brightness: 0.2, contrast: 0.2, saturation: 0.2, hue: 0.02, p: 0.8}

Geometry is applied in the fixed order fit -> scale -> pad/crop -> flips -> rotate90, then colour; boxes follow
every step (albumentations' bbox handling). This module is pure Python so that config loading can check a
step list without importing albumentations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# op -> {param: (AugmentOptions field, default)}
OPS: dict[str, dict[str, tuple[str, float]]] = {
    "scale": {"min": ("scale_min", 0.75), "max": ("scale_max", 1.25), "min_object_px": ("min_object_px", 8.0)},
    "hflip": {"p": ("hflip_prob", 0.5)},
    "vflip": {"p": ("vflip_prob", 0.5)},
    "rotate90": {"p": ("rotate90_prob", 0.5)},
    "color": {
        "brightness": ("brightness", 0.2),
        "contrast": ("contrast", 0.2),
        "saturation": ("saturation", 0.2),
        "hue": ("hue", 0.02),
        "p": ("color_prob", 0.8),
    },
}
PRESETS: dict[str, tuple[dict[str, dict[str, float]], ...]] = {
    # natural images seen from the side: mild scale jitter, left-right flips, colour. Mild, because runs of a few
    # thousand steps learn faster from it (the official 0.1-2.0 jitter is for 300 epochs); see README "Recipe"
    "default": ({"scale": {"min": 0.75, "max": 1.25}}, {"hflip": {"p": 0.5}}, {"color": {}}),
    # for long schedules (tens of epochs and more): stronger scale jitter regularises, and there is time to learn it
    "strong": ({"scale": {"min": 0.5, "max": 1.5}}, {"hflip": {"p": 0.5}}, {"color": {}}),
    # seen from above (aerial, satellite, microscopy, documents on a table): every orientation is plausible
    "aerial": (
        {"scale": {"min": 0.8, "max": 1.25}},
        {"hflip": {"p": 0.5}},
        {"vflip": {"p": 0.5}},
        {"rotate90": {"p": 0.75}},
        {"color": {"brightness": 0.15, "contrast": 0.15, "saturation": 0.15, "hue": 0.01}},
    ),
    "none": (),
}


@dataclass(frozen=True)
class AugmentOptions:
    """The resolved training augmentation (every step off by default: what `none` gives)."""

    scale_min: float = 1.0  # scale jitter relative to "fits the model input"
    scale_max: float = 1.0
    min_object_px: float = 0.0  # bound on zooming out: see `bounded`
    hflip_prob: float = 0.0
    vflip_prob: float = 0.0
    rotate90_prob: float = 0.0
    brightness: float = 0.0  # colour jitter factors are drawn from [1 - x, 1 + x]
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0  # hue shift in [-x, x] (fraction of the colour circle)
    color_prob: float = 0.0
    min_visibility: float = 0.25  # a box cropped to less than this fraction of its area is dropped
    min_box_size: float = 2.0  # boxes narrower or lower than this (model-input px) are dropped

    def __post_init__(self) -> None:
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"need 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")
        for name in ("hflip_prob", "vflip_prob", "rotate90_prob", "color_prob", "min_visibility"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation", "min_box_size", "min_object_px"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")

    @classmethod
    def from_dict(cls, data: dict) -> AugmentOptions:
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"unknown augmentation options {unknown}; valid: {valid}")
        return cls(**data)

    def bounded(self, small_box_px: float) -> AugmentOptions:
        """The scale jitter bounded for a dataset whose small boxes (10th percentile of the sqrt-area at the model
        input) measure `small_box_px`: zooming out never makes them smaller than `min_object_px`."""
        floor = min(1.0, self.min_object_px / max(small_box_px, 1e-6))
        if floor <= self.scale_min:
            return self
        return dataclasses.replace(self, scale_min=floor, scale_max=max(self.scale_max, floor))


def parse_augment(value: str | Sequence[Mapping[str, Any]]) -> AugmentOptions:
    """A preset name or a list of steps -> AugmentOptions; ValueError names the step and the parameter at fault."""
    if isinstance(value, str):
        if value not in PRESETS:
            raise ValueError(f"{value!r} is not a preset; choose one of {list(PRESETS)} or give a list of steps")
        value = PRESETS[value]
    if not isinstance(value, Sequence):
        raise ValueError(f"expected a preset name or a list of steps, got {value!r}")
    fields: dict[str, float] = {}
    seen: set[str] = set()
    for index, step in enumerate(value):
        op, params = _one_step(index, step)
        if op in seen:
            raise ValueError(f"[{index}] {op!r} appears twice")
        seen.add(op)
        unknown = sorted(set(params) - set(OPS[op]))
        if unknown:
            raise ValueError(f"[{index}] {op}: unknown parameter(s) {unknown}; valid: {list(OPS[op])}")
        for param, (field, default) in OPS[op].items():
            number = params.get(param, default)
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise ValueError(f"[{index}] {op}.{param}={number!r}: expected a number")
            fields[field] = float(number)
    try:
        return AugmentOptions(**fields)
    except ValueError as e:
        raise ValueError(f"{e} (from the steps {list(value)})") from None


def _one_step(index: int, step: Any) -> tuple[str, Mapping[str, Any]]:
    if isinstance(step, str):  # `- hflip` is `- hflip: {}`
        step = {step: {}}
    if not isinstance(step, Mapping) or len(step) != 1:
        raise ValueError(
            f"[{index}] a step is one mapping {{op: {{params}}}}, e.g. {{hflip: {{p: 0.5}}}}; got {step!r}"
        )
    ((op, params),) = step.items()
    if op not in OPS:
        raise ValueError(f"[{index}] unknown op {op!r}; choose one of {list(OPS)}")
    params = params or {}
    if not isinstance(params, Mapping):
        raise ValueError(f"[{index}] {op}: parameters must be a mapping, got {params!r}")
    return op, params
