"""What a model costs, measured where it trains: the cost axis of a scaling search's Pareto front."""

from __future__ import annotations

import torch

from effdet_core import model_cost as measure_cost
from pipeline.config import PipelineConfig


def model_cost(config: PipelineConfig, num_classes: int, device: torch.device) -> dict[str, float]:
    """Params (M), GFLOPs (multiply-adds at the configured input size, batch 1) and median/min latency (ms) of one
    image through network + decode + NMS on `device` with this process's torch threads, as metrics.

    A fresh copy of the network is measured, so the model being trained keeps its mode and weights untouched.
    """
    cost = measure_cost(config.model.build(num_classes, pretrained=False).to(device))
    return {
        "params_m": cost.params / 1e6,
        "gflops": cost.flops / 1e9,
        "latency_ms": cost.latency_ms,
        "latency_ms_min": cost.latency_ms_min,
    }
