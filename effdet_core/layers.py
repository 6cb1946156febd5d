"""Small building blocks shared by the feature network and the heads.

TF "same" padding matters for the official weights: a 3x3 stride-2 max-pool on an even-sized map pads
one pixel on the bottom/right only, which timm's `create_pool2d(..., padding="same")` reproduces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import create_pool2d
from torch import nn


def make_act(name: str) -> nn.Module:
    if name == "swish":
        return nn.SiLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"activation {name!r} not supported; choose one of ['swish', 'relu6', 'relu']")


def make_norm(channels: int, *, momentum: float, eps: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=momentum, eps=eps)


class SeparableConv(nn.Module):
    """Depthwise 3x3 conv -> pointwise 1x1 conv (with bias, as the TF model has) -> optional BN."""

    def __init__(self, in_channels: int, out_channels: int, *, norm: nn.Module | None = None, bias: bool = True):
        super().__init__()
        self.dw = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.pw = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        self.bn = norm if norm is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pw(self.dw(x)))


class Resample(nn.Module):
    """Brings one feature map to a node's channels and resolution.

    1x1 conv + BN when the channel count differs, then max-pool (downsample) or nearest (upsample).
    The projection comes before the pooling, as in the official model.
    """

    def __init__(
        self, in_channels: int, out_channels: int, in_stride: int, out_stride: int, *, momentum: float, eps: float
    ):
        super().__init__()
        self.proj = None
        if in_channels != out_channels:
            self.proj = nn.Sequential()
            self.proj.add_module("conv", nn.Conv2d(in_channels, out_channels, 1, bias=True))
            self.proj.add_module("bn", make_norm(out_channels, momentum=momentum, eps=eps))
        self.pool = None
        self.upsample_factor = 1
        if out_stride > in_stride:
            ratio = out_stride // in_stride
            self.pool = create_pool2d("max", kernel_size=ratio + 1, stride=ratio, padding="same")
        elif out_stride < in_stride:
            self.upsample_factor = in_stride // out_stride

    def forward(self, x: torch.Tensor, target_size: tuple[int, int] | None = None) -> torch.Tensor:
        """target_size: (h, w) of the node's level, needed to upsample onto ceil-halved (uneven) maps."""
        if self.proj is not None:
            x = self.proj(x)
        if self.pool is not None:
            x = self.pool(x)
        elif self.upsample_factor > 1:
            if target_size is None or tuple(target_size) == (x.shape[-2] * 2, x.shape[-1] * 2):
                x = F.interpolate(x, scale_factor=float(self.upsample_factor), mode="nearest")
            else:
                x = F.interpolate(x, size=target_size, mode="nearest")
        return x
