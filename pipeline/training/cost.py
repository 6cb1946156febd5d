"""What a model costs, measured where it trains: the cost axis of a scaling search's Pareto front."""

from __future__ import annotations

import torch

from effdet_core import count_flops, count_parameters, measure_latency_ms
from pipeline.config import PipelineConfig


def model_cost(config: PipelineConfig, num_classes: int, device: torch.device) -> dict[str, float]:
    """Params (M), GFLOPs (multiply-adds at the configured input size, batch 1) and median/min latency (ms) of one
    image through network + decode + NMS on `device` with this process's torch threads.

    A fresh copy of the network is timed, so the model being trained keeps its mode and weights untouched.
    """
    resolved = config.model.resolve()
    model = config.model.build(num_classes, pretrained=False).to(device)
    median, fastest = measure_latency_ms(model)
    return {
        "params_m": count_parameters(model) / 1e6,
        "gflops": count_flops(resolved, num_classes=num_classes) / 1e9,
        "latency_ms": median,
        "latency_ms_min": fastest,
    }
