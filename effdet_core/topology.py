"""Feature-network topologies as data: which feature maps each fusion node combines.

Feature maps are numbered as the network builds them: 0..L-1 are the input levels (min_level..max_level),
and each fusion node appends one more. A node lists the indices of its inputs; the first input is always
the same-level map, so edge weights line up with the official BiFPN. The network's outputs are the last
map made at each level.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FusionNode:
    level: int
    inputs: tuple[int, ...]


def build_topology(kind: str, min_level: int, max_level: int) -> tuple[FusionNode, ...]:
    """Nodes of one cell of a BiFPN, PANet or FPN feature network over levels min_level..max_level."""
    if kind not in ("bifpn", "panet", "fpn"):
        raise ValueError(f"feature network {kind!r} not supported; choose one of ['bifpn', 'panet', 'fpn']")
    levels = list(range(min_level, max_level + 1))
    inputs = {level: i for i, level in enumerate(levels)}  # the cell's input map of each level
    latest = dict(inputs)  # the newest map of each level
    top_down: dict[int, int] = {}
    nodes: list[FusionNode] = []

    def add(level: int, node_inputs: tuple[int, ...]) -> int:
        nodes.append(FusionNode(level, node_inputs))
        index = len(levels) + len(nodes) - 1
        latest[level] = index
        return index

    # Top-down path: each level fuses its input with the (upsampled) level above.
    for level in reversed(levels[:-1]):
        top_down[level] = add(level, (inputs[level], latest[level + 1]))
    if kind == "fpn":
        return tuple(nodes)
    # Bottom-up path: each level fuses its top-down map with the (downsampled) level below. BiFPN also
    # adds the skip edge from the cell's input at the same level (the "bi" in BiFPN).
    for level in levels[1:]:
        same_level = top_down.get(level, inputs[level])
        if kind == "bifpn" and level in top_down:
            node_inputs = (inputs[level], same_level, latest[level - 1])
        else:
            node_inputs = (same_level, latest[level - 1])
        add(level, node_inputs)
    return tuple(nodes)


def output_indices(nodes: tuple[FusionNode, ...], min_level: int, max_level: int) -> list[int]:
    """Index of the last map made at each level, min_level..max_level (a level no node touches keeps its input)."""
    num_levels = max_level - min_level + 1
    outputs = list(range(num_levels))
    for i, node in enumerate(nodes):
        outputs[node.level - min_level] = num_levels + i
    return outputs
