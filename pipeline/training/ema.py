"""Exponential moving average of model weights: the weights that get evaluated and saved.

A small one rather than timm's, because its state must round-trip through `torch.load(weights_only=True)`
checkpoints and be resumable mid-run (the update count drives the decay warmup).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """`ema = decay * ema + (1 - decay) * weights` after every optimizer step; buffers (BN stats) are copied.

    With `warmup`, the effective decay is `min(decay, (1 + n) / (10 + n))` after n updates, so a short run is
    not evaluated on weights that are still mostly the initial ones.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        self.updates += 1
        ema_state = self.module.state_dict()
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if value.dtype.is_floating_point:
                target.mul_(decay).add_(value.detach(), alpha=1.0 - decay)
            else:  # e.g. BN's num_batches_tracked
                target.copy_(value)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
