"""Class and box prediction nets, shared across pyramid levels with a separate BN per level."""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import SeparableConv, make_act, make_norm


class HeadNet(nn.Module):
    """`repeats` x (separable conv shared across levels -> per-level BN -> act), then a shared prediction conv.

    Input: list over levels of [B, W, H_l, W_l]. Output: list over levels of [B, A*outputs_per_anchor, H_l, W_l],
    channels anchor-major (anchor a, output k at channel a*outputs_per_anchor + k), as in the official model.
    """

    def __init__(
        self,
        *,
        width: int,
        repeats: int,
        num_levels: int,
        num_anchors: int,
        outputs_per_anchor: int,
        act: str,
        momentum: float,
        eps: float,
        prior_probability: float | None = None,
    ):
        super().__init__()
        self.convs = nn.ModuleList(SeparableConv(width, width) for _ in range(repeats))
        self.norms = nn.ModuleList(
            nn.ModuleList(make_norm(width, momentum=momentum, eps=eps) for _ in range(num_levels))
            for _ in range(repeats)
        )
        self.act = make_act(act)
        self.predict = SeparableConv(width, num_anchors * outputs_per_anchor)
        # Official init: fan-in variance scaling for every head conv; class logits start at the prior (0.01)
        # so the many easy negatives do not swamp early training.
        for conv in [*self.convs, self.predict]:
            for weight in (conv.dw.weight, conv.pw.weight):
                nn.init.normal_(weight, std=math.sqrt(1.0 / weight[0].numel()))  # fan_in = in/groups * k * k
            nn.init.zeros_(conv.pw.bias)
        if prior_probability is not None:
            nn.init.constant_(self.predict.pw.bias, -math.log((1 - prior_probability) / prior_probability))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for level, x in enumerate(features):
            for conv, norms in zip(self.convs, self.norms, strict=True):
                x = self.act(norms[level](conv(x)))
            outputs.append(self.predict(x))
        return outputs
