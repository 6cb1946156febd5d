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


# IoU entries computed at once: the [B, G, N] matrix is the largest tensor of a training step (a batch of 4
# images with 60 boxes each against the 109k anchors of P2-P4 at 384 px is 26M entries). On a CPU, blocks of
# anchors that stay in cache are 5x faster than the whole matrix; a GPU takes large blocks, which bound its memory
# when boxes and anchors are many (16 x 200 boxes x 435k anchors at 768 px would be 5.6 GB).
CPU_BLOCK = 1 << 18
GPU_BLOCK = 1 << 26


def assign(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_valid: torch.Tensor,
    match_threshold: float = 0.5,
    block: int | None = None,
) -> Assignment:
    """anchors [N, 4] xyxy; gt_boxes [B, G, 4] xyxy; gt_labels [B, G]; gt_valid [B, G] -> Assignment.

    `block`: IoU entries per block of anchors (default by device); the result does not depend on it.
    """
    batch, num_gt = gt_valid.shape
    best_iou, matched_gt, best_anchor = _best_matches(anchors, gt_boxes, gt_valid, block)
    positive = best_iou >= match_threshold

    # Force-match each valid box to its best anchor. When two boxes share a best anchor, the lower box
    # index wins (as TF's argmax does): scatter the minimum box index onto each anchor.
    box_index = torch.arange(num_gt, device=gt_boxes.device).expand(batch, num_gt)
    forced_gt = torch.full_like(matched_gt, num_gt)  # num_gt = "not forced"
    forced_gt.scatter_reduce_(1, best_anchor, box_index.masked_fill(~gt_valid, num_gt), reduce="amin")
    forced = forced_gt < num_gt
    matched_gt = torch.where(forced, forced_gt, matched_gt)
    positive = positive | forced

    matched_boxes = torch.gather(gt_boxes, 1, matched_gt[..., None].expand(-1, -1, 4))  # [B, N, 4]
    labels = torch.gather(gt_labels, 1, matched_gt)  # [B, N]
    return Assignment(positive=positive, labels=labels, box_targets=encode(matched_boxes, anchors[None]))


def _best_matches(
    anchors: torch.Tensor, gt_boxes: torch.Tensor, gt_valid: torch.Tensor, block: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per anchor its best IoU and box ([B, N] each), per box its best anchor ([B, G], the first on ties), from
    the IoU matrix taken in blocks of anchors (padding boxes at IoU -1 never win)."""
    batch, num_gt = gt_valid.shape
    block = block or (GPU_BLOCK if anchors.is_cuda else CPU_BLOCK)
    step = max(1, block // max(1, batch * num_gt))
    best_iou = anchors.new_empty(batch, len(anchors))
    matched_gt = torch.empty(batch, len(anchors), dtype=torch.int64, device=anchors.device)
    box_best = anchors.new_full((batch, num_gt), -2.0)  # below any IoU, padding's -1 included
    best_anchor = torch.zeros(batch, num_gt, dtype=torch.int64, device=anchors.device)
    for start in range(0, len(anchors), step):
        iou = pairwise_iou(gt_boxes, anchors[start : start + step])  # [B, G, n]
        iou.masked_fill_(~gt_valid[..., None], -1.0)
        best_iou[:, start : start + step], matched_gt[:, start : start + step] = iou.max(dim=1)
        block_best, block_anchor = iou.max(dim=2)  # [B, G]
        better = block_best > box_best  # strictly: an earlier block keeps its tie
        box_best = torch.where(better, block_best, box_best)
        best_anchor = torch.where(better, block_anchor + start, best_anchor)
    return best_iou, matched_gt, best_anchor
