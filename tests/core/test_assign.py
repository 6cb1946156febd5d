"""The anchor assignment: the official rules, and the same result whatever the block of anchors."""

import pytest
import torch

from effdet_core.assign import assign, pad_targets
from effdet_core.box_coder import pairwise_iou


def _dense_reference(anchors, boxes, labels, valid, threshold=0.5):
    """The rules on the whole IoU matrix at once: positive at IoU >= threshold or as a box's best anchor."""
    iou = pairwise_iou(boxes, anchors).masked_fill(~valid[..., None], -1.0)  # [B, G, N]
    best, matched = iou.max(dim=1)
    positive = best >= threshold
    for b in range(len(boxes)):
        for g in reversed(range(boxes.shape[1])):  # the lower box index wins a shared best anchor
            if valid[b, g]:
                anchor = int(iou[b, g].argmax())
                positive[b, anchor], matched[b, anchor] = True, g
    return positive, torch.gather(labels, 1, matched)


def _grid_anchors(size=64, stride=8, side=16.0):
    centres = torch.arange(stride / 2, size, stride)
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    c = torch.stack([cx.flatten(), cy.flatten()], -1)
    return torch.cat([c - side / 2, c + side / 2], -1)  # [N, 4]


@pytest.mark.parametrize("block", [1, 7, 100, 1 << 20])
def test_assignment_in_blocks_equals_the_whole_matrix(block):
    anchors = _grid_anchors()
    gen = torch.Generator().manual_seed(0)
    targets = []
    for count in (5, 0, 3):  # an image without boxes pads to the longest
        xy = torch.rand(count, 2, generator=gen) * 48
        targets.append(
            {
                "boxes": torch.cat([xy, xy + 4 + torch.rand(count, 2, generator=gen) * 12], -1),
                "labels": torch.randint(0, 4, (count,), generator=gen),
            }
        )
    targets[2]["boxes"][1] = targets[2]["boxes"][0]  # two boxes with one best anchor: the first keeps it
    boxes, labels, valid = pad_targets(targets, torch.device("cpu"))
    result = assign(anchors, boxes, labels, valid, block=block)
    positive, matched_labels = _dense_reference(anchors, boxes, labels, valid)
    assert torch.equal(result.positive, positive)
    assert torch.equal(result.labels[positive], matched_labels[positive])
    assert not result.positive[1].any()  # padding never matches
    best_anchors = pairwise_iou(boxes, anchors).argmax(dim=2)  # [B, G]
    assert result.positive.gather(1, best_anchors)[valid].all()  # every box has at least its best anchor


def test_a_box_far_below_the_threshold_still_gets_its_best_anchor():
    anchors = _grid_anchors()
    boxes, labels, valid = pad_targets(
        [{"boxes": torch.tensor([[10.0, 10.0, 12.0, 12.0]]), "labels": torch.tensor([2])}], torch.device("cpu")
    )
    result = assign(anchors, boxes, labels, valid, block=8)
    best = int(pairwise_iou(boxes, anchors)[0, 0].argmax())
    assert result.positive[0].nonzero().flatten().tolist() == [best]
    assert int(result.labels[0, best]) == 2
