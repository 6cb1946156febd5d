"""Anchor-to-ground-truth assignment for a whole batch at once (official rules).

An anchor is positive when its best IoU with a ground-truth box is >= the match threshold (0.5); every
ground-truth box is also force-matched to its best anchor, even below the threshold. Everything else is
negative (the official model has no ignore band). Images are padded to the batch's largest box count, and
padding never matches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence

from .box_coder import encode, pairwise_iou


@dataclass
class Assignment:
    positive: torch.Tensor  # [B, N] bool
    labels: torch.Tensor  # [B, N] int64, label of the matched box (meaningful where positive)
    box_targets: torch.Tensor  # [B, N, 4] (ty, tx, th, tw) codes of the matched box (meaningful where positive)


def pad_targets(targets: list[dict[str, torch.Tensor]], device: torch.device) -> tuple[torch.Tensor, ...]:
    """List of per-image {"boxes" [n,4], "labels" [n]} -> boxes [B, G, 4], labels [B, G], valid [B, G] (G >= 1)."""
    counts = torch.tensor([len(t["boxes"]) for t in targets], device=device)
    boxes = pad_sequence(
        [t["boxes"].to(device=device, dtype=torch.float32).reshape(-1, 4) for t in targets], batch_first=True
    )
    labels = pad_sequence(
        [t["labels"].to(device=device, dtype=torch.int64).reshape(-1) for t in targets], batch_first=True
    )
    if boxes.shape[1] == 0:  # no boxes anywhere in the batch: keep one padding slot so shapes stay valid
        boxes = boxes.new_zeros(len(targets), 1, 4)
        labels = labels.new_zeros(len(targets), 1)
    valid = torch.arange(boxes.shape[1], device=device)[None] < counts[:, None]
    return boxes, labels, valid


def assign(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_valid: torch.Tensor,
    match_threshold: float = 0.5,
) -> Assignment:
    """anchors [N, 4] xyxy; gt_boxes [B, G, 4] xyxy; gt_labels [B, G]; gt_valid [B, G] -> Assignment."""
    batch, num_gt = gt_valid.shape
    iou = pairwise_iou(gt_boxes, anchors)  # [B, G, N]
    iou = iou.masked_fill(~gt_valid[..., None], -1.0)
    best_iou, matched_gt = iou.max(dim=1)  # per anchor: [B, N]
    positive = best_iou >= match_threshold

    # Force-match each valid box to its best anchor. When two boxes share a best anchor, the lower box
    # index wins (as TF's argmax does): scatter the minimum box index onto each anchor.
    best_anchor = iou.argmax(dim=2)  # [B, G]
    box_index = torch.arange(num_gt, device=iou.device).expand(batch, num_gt)
    forced_gt = torch.full_like(matched_gt, num_gt)  # num_gt = "not forced"
    forced_gt.scatter_reduce_(1, best_anchor, box_index.masked_fill(~gt_valid, num_gt), reduce="amin")
    forced = forced_gt < num_gt
    matched_gt = torch.where(forced, forced_gt, matched_gt)
    positive = positive | forced

    matched_boxes = torch.gather(gt_boxes, 1, matched_gt[..., None].expand(-1, -1, 4))  # [B, N, 4]
    labels = torch.gather(gt_labels, 1, matched_gt)  # [B, N]
    return Assignment(positive=positive, labels=labels, box_targets=encode(matched_boxes, anchors[None]))
