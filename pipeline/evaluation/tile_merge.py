"""Detections of an image's windows (sliced inference) merged into one prediction per image, in its own pixels.

A window's detection that touches one of the window's inner edges (an edge inside the image, not on its border)
within EDGE_PX, and spans no more than the windows' overlap along that axis, is dropped: the object is cut there
and lies whole in the neighbouring window, whose detection stands for it. What remains of every window and of
the whole-image pass (objects larger than a window) then goes through class-wise NMS (torchvision's
`batched_nms`), so an object on a seam is reported once.

Input entries are `pipeline.evaluation.coco_eval.Prediction`s with ``window`` (x0, y0, x1, y1 source px) and
``whole`` (the whole-image pass) added, boxes already in source px; entries without ``window`` are whole images and
pass through.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchvision.ops import batched_nms

EDGE_PX = 3.0  # source px: a box this close to an inner window edge counts as cut by it
MERGE_IOU = 0.5

Prediction = dict[str, Any]


def merge_tiles(
    predictions: Sequence[Prediction], overlap_px: float, iou_threshold: float = MERGE_IOU
) -> list[Prediction]:
    """One prediction per image id (sorted by id; boxes by decreasing score), windows merged (module docstring).

    ``overlap_px``: source px shared by neighbouring windows (`TilingSpec.overlap_px`)."""
    by_image: dict[int, list[Prediction]] = defaultdict(list)
    for prediction in predictions:
        by_image[int(prediction["image_id"])].append(prediction)
    out = []
    for image_id in sorted(by_image):
        parts = by_image[image_id]
        if "window" not in parts[0]:
            out.append(parts[0])
            continue
        width = max(p["window"][2] for p in parts)  # the windows tile the image: their union is its extent
        height = max(p["window"][3] for p in parts)
        kept = [_drop_cut(p, width, height, overlap_px) for p in parts]
        out.append(_nms(image_id, kept, iou_threshold))
    return out


def _drop_cut(prediction: Prediction, width: int, height: int, overlap_px: float) -> Prediction:
    """The window's detections without those cut by an inner edge that the neighbour holds whole."""
    boxes = np.asarray(prediction["boxes"], np.float32).reshape(-1, 4)
    if prediction.get("whole") or not len(boxes):
        return prediction
    x0, y0, x1, y1 = prediction["window"]
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cut = np.zeros(len(boxes), bool)
    if x0 > 0:
        cut |= (boxes[:, 0] <= x0 + EDGE_PX) & (bw <= overlap_px)
    if y0 > 0:
        cut |= (boxes[:, 1] <= y0 + EDGE_PX) & (bh <= overlap_px)
    if x1 < width:
        cut |= (boxes[:, 2] >= x1 - EDGE_PX) & (bw <= overlap_px)
    if y1 < height:
        cut |= (boxes[:, 3] >= y1 - EDGE_PX) & (bh <= overlap_px)
    keep = ~cut
    return {
        **prediction,
        "boxes": boxes[keep],
        "scores": prediction["scores"][keep],
        "labels": prediction["labels"][keep],
    }


def _nms(image_id: int, parts: list[Prediction], iou_threshold: float) -> Prediction:
    boxes = np.concatenate([np.asarray(p["boxes"], np.float32).reshape(-1, 4) for p in parts])
    scores = np.concatenate([np.asarray(p["scores"], np.float32).reshape(-1) for p in parts])
    labels = np.concatenate([np.asarray(p["labels"], np.int64).reshape(-1) for p in parts])
    keep = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), iou_threshold)
    keep = keep.numpy()  # indices by decreasing score
    return {"image_id": image_id, "boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
