"""Feature-network topologies are data: the BiFPN cell equals the official node table."""

from __future__ import annotations

from effdet_core.topology import FusionNode, build_topology, output_indices

# Official BiFPN cell for P3-P7 (inputs numbered P3..P7 = 0..4, then nodes in order).
OFFICIAL_BIFPN = [
    (6, (3, 4)),
    (5, (2, 5)),
    (4, (1, 6)),
    (3, (0, 7)),
    (4, (1, 7, 8)),
    (5, (2, 6, 9)),
    (6, (3, 5, 10)),
    (7, (4, 11)),
]


def test_bifpn_matches_official_nodes():
    assert build_topology("bifpn", 3, 7) == tuple(FusionNode(level, inputs) for level, inputs in OFFICIAL_BIFPN)
    assert output_indices(build_topology("bifpn", 3, 7), 3, 7) == [8, 9, 10, 11, 12]


def test_panet_has_no_skip_edges_and_fpn_only_top_down():
    panet = build_topology("panet", 3, 7)
    assert all(len(node.inputs) == 2 for node in panet) and len(panet) == 8
    fpn = build_topology("fpn", 3, 7)
    assert [node.level for node in fpn] == [6, 5, 4, 3]
    assert output_indices(fpn, 3, 7) == [8, 7, 6, 5, 4]  # P7 passes through unchanged


def test_p8_topology_for_d7x():
    nodes = build_topology("bifpn", 3, 8)
    assert len(nodes) == 10 and nodes[-1] == FusionNode(8, (5, 14))
