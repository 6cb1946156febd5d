"""Parameter count and FLOPs (multiply-adds, as the paper counts them) via torch's own flop counter."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import EfficientDetConfig
from .model import create_model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(
    model_or_config: nn.Module | EfficientDetConfig,
    image_size: tuple[int, int] | int | None = None,
    num_classes: int = 90,
) -> int:
    """Multiply-adds of one forward pass at `image_size` (default: the config's), batch 1.

    A config is built on the meta device, so even D7x costs no memory or compute; a module is run as it is.
    """
    if isinstance(model_or_config, EfficientDetConfig):
        with torch.device("meta"):
            model = create_model(model_or_config, num_classes=num_classes)
        device = torch.device("meta")
    else:
        model = model_or_config
        device = next(model.parameters()).device
    config = model.config
    size = image_size or config.image_size
    if isinstance(size, int):
        size = (size, size)
    images = torch.zeros(1, 3, *size, device=device)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(images)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2  # the counter reports FLOPs = 2 x multiply-adds
