"""Anchor boxes in the official order: level, then row-major location, then (octave scale, aspect ratio)."""

from __future__ import annotations

import torch

from .config import EfficientDetConfig


def generate_anchors(
    config: EfficientDetConfig,
    image_size: tuple[int, int],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Anchors for an input of `image_size` (h, w): [N, 4] xyxy in input pixels, N = sum_l H_l*W_l*A.

    Within a location the A = num_scales * len(aspect_ratios) anchors go scale-major, matching the head's
    anchor-major channel layout.
    """
    height, width = image_size
    per_level = []
    for level_h, level_w in feature_sizes(image_size, config.min_level, config.max_level):
        # Effective strides: exactly 2**level for divisible sizes, fractional for the ceil-halved maps of
        # uneven sizes (as the official model places them).
        stride_y, stride_x = height / level_h, width / level_w
        half_sizes = torch.tensor(anchor_shapes(config, stride_x, stride_y), dtype=torch.float64) / 2  # [A, 2] (x, y)
        ys = torch.arange(stride_y / 2, height, stride_y, dtype=torch.float64)[:level_h]
        xs = torch.arange(stride_x / 2, width, stride_x, dtype=torch.float64)[:level_w]
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centers = torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=-1)  # [H_l*W_l, 2]
        boxes = torch.cat([centers[:, None] - half_sizes[None], centers[:, None] + half_sizes[None]], dim=-1)
        per_level.append(boxes.reshape(-1, 4))  # [H_l*W_l*A, 4]
    return torch.cat(per_level).to(device=device, dtype=torch.float32)


def octave_scales(num_scales: int) -> list[float]:
    """The octave multipliers of the anchor sizes at one location: 2**(k / num_scales), k = 0..num_scales-1."""
    return [2 ** (octave / num_scales) for octave in range(num_scales)]


def anchor_shapes(config: EfficientDetConfig, stride_x: float, stride_y: float) -> list[tuple[float, float]]:
    """(width, height) in input px of the A anchors at one location of a level with these strides, scale-major
    (the head's anchor-major channel order): anchor_scale * stride * octave * aspect ratio."""
    return [
        (config.anchor_scale * stride_x * octave * ax, config.anchor_scale * stride_y * octave * ay)
        for octave in octave_scales(config.num_scales)
        for ax, ay in config.aspect_ratios
    ]


def feature_sizes(image_size: tuple[int, int], min_level: int, max_level: int) -> list[tuple[int, int]]:
    """(h, w) of each level's map: TF "same" convs and pools halve with ceil."""
    height, width = image_size
    sizes = []
    for level in range(1, max_level + 1):
        height, width = (height + 1) // 2, (width + 1) // 2
        if level >= min_level:
            sizes.append((height, width))
    return sizes


class AnchorCache:
    """Anchors per (input size, device), built once: a model may see several input sizes (e.g. eval vs train)."""

    def __init__(self, config: EfficientDetConfig):
        self.config = config
        self._cache: dict[tuple, torch.Tensor] = {}

    def get(self, image_size: tuple[int, int], device: torch.device) -> torch.Tensor:
        key = (tuple(image_size), str(device))
        if key not in self._cache:
            self._cache[key] = generate_anchors(self.config, tuple(image_size), device)
        return self._cache[key]
