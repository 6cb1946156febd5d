"""Parameter count, FLOPs (multiply-adds, as the paper counts them, via torch's own flop counter) and measured
latency: the cost side of a detector's accuracy/cost trade-off."""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import EfficientDetConfig
from .model import EfficientDet, create_model
from .wrappers import EfficientDetForPrediction


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


@torch.no_grad()
def measure_latency_ms(model: EfficientDet, repeats: int = 5, warmup: int = 2) -> tuple[float, float]:
    """(median, min) wall time in ms of one image at the model's input size through network + decode + NMS.

    Both are kept: on a shared machine the median shows what a caller saw, the minimum what the model costs.
    """
    predictor = EfficientDetForPrediction(model).eval()
    device = next(model.parameters()).device
    images = torch.zeros(1, 3, *model.config.image_size, device=device)
    times = []
    for k in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        predictor(images)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if k >= warmup:
            times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), min(times)


def latency_device(model: EfficientDet) -> str:
    device = next(model.parameters()).device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu, {torch.get_num_threads()} threads"


@dataclass(frozen=True)
class ModelCost:
    """What one detector costs: the cost axes of a scaling search and the tags of a registered version."""

    params: int
    flops: int  # multiply-adds of one image at the model's input size
    latency_ms: float | None = None  # median of one image through network + decode + NMS; None when not measured
    latency_ms_min: float | None = None
    latency_device: str | None = None


def model_cost(model: EfficientDet, latency: bool = True) -> ModelCost:
    """Params, FLOPs and (unless `latency=False`) measured latency of `model` on its device with this process's
    torch threads; the model keeps its mode and weights."""
    cost = ModelCost(params=count_parameters(model), flops=count_flops(model))
    if not latency:
        return cost
    median, fastest = measure_latency_ms(model)
    return dataclasses.replace(cost, latency_ms=median, latency_ms_min=fastest, latency_device=latency_device(model))
