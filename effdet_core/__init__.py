"""EfficientDet: the model alone (torch + timm), every official variant D0-D7x and Lite0-4 plus custom scalings."""

from .anchors import generate_anchors
from .complexity import ModelCost, count_flops, count_parameters, latency_device, measure_latency_ms, model_cost
from .config import VARIANTS, EfficientDetConfig, formula_scaling, get_config, scaled_config
from .loss import LossConfig
from .model import EfficientDet, create_model
from .postprocess import PostprocessConfig
from .weights import load_effdet_weights
from .wrappers import EfficientDetForPrediction, EfficientDetForTraining, validate_targets

__all__ = [
    "VARIANTS",
    "EfficientDet",
    "EfficientDetConfig",
    "EfficientDetForPrediction",
    "EfficientDetForTraining",
    "LossConfig",
    "ModelCost",
    "PostprocessConfig",
    "count_flops",
    "count_parameters",
    "create_model",
    "formula_scaling",
    "generate_anchors",
    "get_config",
    "latency_device",
    "load_effdet_weights",
    "measure_latency_ms",
    "model_cost",
    "scaled_config",
    "validate_targets",
]
