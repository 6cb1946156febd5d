"""Box encoding relative to anchors, as in the official Faster R-CNN coder (no scale factors).

Codes are (ty, tx, th, tw): centre offsets in anchor units and log size ratios. That order is what the
published weights regress, so it is kept here even though boxes elsewhere are xyxy.
"""

from __future__ import annotations

import torch

_EPS = 1e-8


def _center_size(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return (y1 + y2) / 2, (x1 + x2) / 2, y2 - y1, x2 - x1


def encode(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """boxes, anchors: [..., 4] xyxy -> codes [..., 4] (ty, tx, th, tw)."""
    yc, xc, h, w = _center_size(boxes)
    yca, xca, ha, wa = _center_size(anchors)
    ha, wa, h, w = ha + _EPS, wa + _EPS, h + _EPS, w + _EPS
    return torch.stack([(yc - yca) / ha, (xc - xca) / wa, torch.log(h / ha), torch.log(w / wa)], dim=-1)


def decode(codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """codes [..., 4] (ty, tx, th, tw), anchors [..., 4] xyxy -> boxes [..., 4] xyxy."""
    yca, xca, ha, wa = _center_size(anchors)
    ty, tx, th, tw = codes.unbind(-1)
    # Unclamped, as the official decoder: callers decode in float32 and clip boxes to the image afterwards.
    h = torch.exp(th) * ha
    w = torch.exp(tw) * wa
    yc = ty * ha + yca
    xc = tx * wa + xca
    return torch.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], dim=-1)


def pairwise_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """Batched IoU: [B, G, 4] x [N, 4] (xyxy) -> [B, G, N]."""
    ax1, ay1, ax2, ay2 = (c[..., None] for c in boxes_a.unbind(-1))  # each [B, G, 1]
    bx1, by1, bx2, by2 = boxes_b.unbind(-1)  # each [N]
    inter_w = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0)  # [B, G, N]
    inter_h = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp(min=0)
    inter = inter_w * inter_h
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union.clamp(min=_EPS)
