"""Optimizer and learning-rate schedule of the official recipe: SGD momentum (or AdamW), warmup then cosine,
weight decay on weights only, gradient-norm clipping."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from pipeline.config import OptimConfig
from pipeline.training.schedule import Schedule


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: conv/linear weights (decayed) and biases + norm parameters (never decayed).

    Decaying BN scales and biases only hurts (they are not over-parameterised the way weights are); any
    parameter with fewer than two dimensions is a bias or a norm parameter in this model.
    """
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def scaled_lr(cfg: OptimConfig, global_batch: int) -> float:
    """`lr` is given for `lr_reference_batch` images per step; the real global batch scales it by the square root
    of the ratio (the default: it keeps the update noise alike across batch sizes, and suited every batch measured
    here) or linearly (Goyal et al.'s rule for large-batch SGD)."""
    ratio = global_batch / cfg.lr_reference_batch
    return cfg.lr * (ratio if cfg.lr_scaling == "linear" else math.sqrt(ratio))


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float, fused: bool = False) -> torch.optim.Optimizer:
    """`fused`: one kernel updates every parameter (GPU: fewer launches, the same arithmetic); else torch's default
    (foreach on GPU, a per-parameter loop on CPU)."""
    groups = param_groups(model, cfg.weight_decay)
    implementation = {"fused": True} if fused else {}
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=False, **implementation)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(cfg.momentum, 0.999), **implementation)
    raise ValueError(f"optim.name={cfg.name!r} not supported; choose one of ['sgd', 'adamw']")


def warmup_cosine_factor(
    step: int, warmup_steps: int, total_steps: int, start_factor: float, min_ratio: float
) -> float:
    """The lr multiplier at optimizer step `step`: linear warmup from `start_factor`, then cosine to `min_ratio`."""
    if warmup_steps > 0 and step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, schedule: Callable[[], Schedule]
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-optimizer-step schedule (stepped after every optimizer step, not per epoch). `schedule()` is read at
    every step: a time budget replaces the run's schedule once it has measured the step rate."""

    def factor(step: int) -> float:
        current = schedule()
        return warmup_cosine_factor(
            step, current.warmup_steps, current.total_steps, cfg.warmup_start_factor, cfg.min_lr_ratio
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def clip_gradients(model: nn.Module, max_norm: float | None) -> float | None:
    """Clip the global gradient norm; returns the norm before clipping (None when clipping is off)."""
    if max_norm is None:
        return None
    return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
