"""EfficientDet: the model alone (torch + timm), every official variant D0-D7x and Lite0-4 plus custom scalings.

Names resolve lazily (PEP 562): `from effdet_core.config import ...` (what configs need) does not import timm,
torchvision or the network code; `from effdet_core import create_model` works as usual.
"""

from __future__ import annotations

from .lazy import lazy_exports

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "AnchorCache": "anchors",
    "generate_anchors": "anchors",
    "ModelCost": "complexity",
    "count_flops": "complexity",
    "count_parameters": "complexity",
    "latency_device": "complexity",
    "measure_latency_ms": "complexity",
    "model_cost": "complexity",
    "VARIANTS": "config",
    "EfficientDetConfig": "config",
    "formula_scaling": "config",
    "get_config": "config",
    "scaled_config": "config",
    "LossConfig": "config",
    "EfficientDet": "model",
    "create_model": "model",
    "PostprocessConfig": "postprocess",
    "load_effdet_weights": "weights",
    "EfficientDetForPrediction": "wrappers",
    "EfficientDetForTraining": "wrappers",
    "validate_targets": "wrappers",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
