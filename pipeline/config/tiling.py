"""`data.tiling`: train and evaluate on windows of large images instead of the whole image shrunk to the input.

    auto                          tile when the images are much larger than the model input and their boxes would
                                  be too small at it (fitted before training, and said: pipeline/data/auto_fit.py)
    off                           every image is fitted whole into the model input
    {size: PX, overlap: F}        windows of PX source pixels (default: the model input, i.e. native resolution),
                                  overlapping by the fraction F of a side (default 0.2)
    {scale: S, overlap: F}        windows of (model input / S) source pixels: S=2 upsamples every window twice

Pure Python, so that config loading can check a value without importing the data layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_OVERLAP = 0.2
KEYS = ("size", "overlap", "scale")


@dataclass(frozen=True)
class TilingSpec:
    """Windows of ``size`` x ``size`` source px, neighbours overlapping by ``overlap`` of a side."""

    size: int
    overlap: float = DEFAULT_OVERLAP

    @property
    def stride(self) -> int:
        """Source px from one window to the next: at least 1."""
        return max(1, round(self.size * (1.0 - self.overlap)))

    @property
    def overlap_px(self) -> int:
        return self.size - self.stride

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "overlap": self.overlap}


def check_tiling(value: Any) -> None:
    """ValueError naming what is wrong with a `data.tiling` value (`auto`, `off` or a mapping of KEYS)."""
    if value in ("auto", "off"):
        return
    if not isinstance(value, Mapping):
        raise ValueError(f"{value!r}: must be auto, off or a mapping such as {{size: 512, overlap: 0.2}}")
    unknown = sorted(set(value) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; use {list(KEYS)}")
    if "size" in value and "scale" in value:
        raise ValueError("give size or scale, not both (size = model input / scale)")
    size, scale = value.get("size"), value.get("scale")
    overlap = value.get("overlap", DEFAULT_OVERLAP)
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 32):
        raise ValueError(f"size={size!r}: must be a whole number of source pixels >= 32")
    if scale is not None and (not isinstance(scale, int | float) or not 0.125 <= scale <= 8):
        raise ValueError(f"scale={scale!r}: must be a number in [0.125, 8]")
    if not isinstance(overlap, int | float) or not 0 <= overlap <= 0.75:
        raise ValueError(f"overlap={overlap!r}: must be a fraction of the window side in [0, 0.75]")


def resolve_tiling(value: Any, input_side: int) -> TilingSpec | None:
    """The windows of a checked, non-`auto` `data.tiling` value for a model input of ``input_side`` px; None = off."""
    assert value != "auto", "data.tiling: auto must be fitted (pipeline.data.auto_fit) first"
    if value == "off":
        return None
    size = value.get("size") or round(input_side / float(value.get("scale", 1.0)))
    return TilingSpec(int(size), float(value.get("overlap", DEFAULT_OVERLAP)))


def tiling_from_tag(tag: str | None) -> TilingSpec | None:
    """The windows of a registered version's `tiling` tag (JSON ``{"size", "overlap"}``, or ``off``)."""
    import json

    if tag in (None, "off"):
        return None
    spec = json.loads(tag)
    return TilingSpec(int(spec["size"]), float(spec["overlap"]))


def slice_setting(flag: str, trained: TilingSpec | None) -> TilingSpec | None:
    """`--slice auto|off|PX` against the windows a model was trained on: auto follows them (whole images for a
    model trained on whole images); PX slices into PX windows overlapping DEFAULT_OVERLAP. ValueError names a bad
    flag."""
    if flag == "off":
        return None
    if flag == "auto":
        return trained
    if not flag.isdigit() or int(flag) < 32:
        raise ValueError(f"--slice {flag!r}: use auto (the model's own setting), off, or a window side in px >= 32")
    return TilingSpec(int(flag))
