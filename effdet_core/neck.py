"""The feature network: extra pyramid levels (P6, P7, ...) plus repeated fusion cells (BiFPN, PANet or FPN)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import Resample, SeparableConv, make_act, make_norm
from .topology import FusionNode, build_topology, output_indices


class WeightedFusion(nn.Module):
    """Combines same-shaped maps: fast normalized (relu(w) / (sum + 1e-4)), softmax, or plain sum."""

    def __init__(self, num_inputs: int, method: str):
        super().__init__()
        self.method = method
        self.weights = nn.Parameter(torch.ones(num_inputs)) if method != "sum" else None

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        if self.weights is None:
            return _weighted_sum(maps, None)
        w = self.weights.to(maps[0].dtype)
        if self.method == "softmax":
            return _weighted_sum(maps, torch.softmax(w, dim=0))
        w = torch.relu(w)
        return _weighted_sum(maps, w / (w.sum() + 1e-4))


def _weighted_sum(maps: list[torch.Tensor], weights: torch.Tensor | None) -> torch.Tensor:
    # A chain of adds rather than stack + sum: no [.., num_inputs] temporary on the hot path.
    out = maps[0] if weights is None else maps[0] * weights[0]
    for i in range(1, len(maps)):
        out = out + (maps[i] if weights is None else maps[i] * weights[i])
    return out


@dataclass(frozen=True)
class NodeStyle:
    """How every fusion node of a feature network is built: output width, fusion weighting, activation, BN."""

    width: int
    fusion: str
    act: str
    momentum: float
    eps: float


class FusionNodeModule(nn.Module):
    """One node: resample each input to this level -> weighted fusion -> activation -> separable conv -> BN."""

    def __init__(self, node: FusionNode, channels: list[int], strides: list[int], style: NodeStyle):
        super().__init__()
        width, norm = style.width, {"momentum": style.momentum, "eps": style.eps}
        out_stride = 2**node.level
        self.input_indices = node.inputs
        self.inputs = nn.ModuleDict(
            {str(i): Resample(channels[i], width, strides[i], out_stride, **norm) for i in node.inputs}
        )
        self.fusion = WeightedFusion(len(node.inputs), style.fusion)
        self.act = make_act(style.act)
        self.conv = SeparableConv(width, width, norm=make_norm(width, **norm))

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        # The first input is the node's own level: its size is the target for upsampled inputs.
        target_size = maps[self.input_indices[0]].shape[-2:]
        resampled = [self.inputs[str(i)](maps[i], target_size) for i in self.input_indices]
        return self.conv(self.act(self.fusion(resampled)))


class FusionCell(nn.Module):
    """One repeat of the feature network: maps list over levels -> maps list over levels."""

    def __init__(
        self, nodes: tuple[FusionNode, ...], in_channels: list[int], *, min_level: int, max_level: int, style: NodeStyle
    ):
        super().__init__()
        channels = list(in_channels)
        strides = [2**level for level in range(min_level, max_level + 1)]
        self.nodes = nn.ModuleList()
        for node in nodes:
            self.nodes.append(FusionNodeModule(node, channels, strides, style))
            channels.append(style.width)
            strides.append(2**node.level)
        self.outputs = output_indices(nodes, min_level, max_level)

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        maps = list(maps)
        for node in self.nodes:
            maps.append(node(maps))
        return [maps[i] for i in self.outputs]


class FeatureNetwork(nn.Module):
    """Backbone maps (e.g. P3-P5) -> extra levels up to max_level -> `repeats` fusion cells -> P_min..P_max."""

    def __init__(
        self,
        backbone_channels: list[int],
        *,
        kind: str,
        min_level: int,
        max_level: int,
        width: int,
        repeats: int,
        fusion: str,
        act: str,
        momentum: float,
        eps: float,
    ):
        super().__init__()
        channels = list(backbone_channels)
        first_extra = min_level + len(channels)
        # P6 = max-pool(BN(1x1 conv(last backbone map))); P7 = max-pool(P6); keyed by level.
        self.extra_levels = nn.ModuleDict()
        for level in range(first_extra, max_level + 1):
            self.extra_levels[f"P{level}"] = Resample(
                channels[-1], width, 2 ** (level - 1), 2**level, momentum=momentum, eps=eps
            )
            channels.append(width)
        nodes = build_topology(kind, min_level, max_level)
        style = NodeStyle(width=width, fusion=fusion, act=act, momentum=momentum, eps=eps)
        self.cells = nn.ModuleList()
        for _ in range(repeats):
            self.cells.append(FusionCell(nodes, channels, min_level=min_level, max_level=max_level, style=style))
            channels = [width] * len(channels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        maps = list(features)
        for extra in self.extra_levels.values():
            maps.append(extra(maps[-1]))
        for cell in self.cells:
            maps = cell(maps)
        return maps
