"""Shared helpers for effdet_core tests: tiny models and synthetic targets."""

from __future__ import annotations

import pytest
import torch

import effdet_core as E


def tiny_config(**overrides) -> E.EfficientDetConfig:
    """A D0-shaped detector small enough for CPU unit tests (128 px, width 32, 2 cells)."""
    base = {"image_size": 128, "fpn_channels": 32, "fpn_repeats": 2, "head_repeats": 2, "backbone_drop_path_rate": 0.0}
    return E.get_config("d0", **{**base, **overrides})


def random_targets(batch: int, image_size: int, num_classes: int, max_boxes: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    targets = []
    for i in range(batch):
        n = int(torch.randint(0, max_boxes + 1, (1,), generator=gen)) if i else max_boxes
        xy = torch.rand(n, 2, generator=gen) * image_size * 0.6
        wh = 8 + torch.rand(n, 2, generator=gen) * image_size * 0.35
        boxes = torch.cat([xy, (xy + wh).clamp(max=image_size)], dim=1)
        targets.append({"boxes": boxes, "labels": torch.randint(0, num_classes, (n,), generator=gen)})
    return targets


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
