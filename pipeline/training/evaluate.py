"""Validation during training: predict on this rank's shard, gather all ranks' predictions, COCO-score on rank 0.

Scoring itself (pycocotools) lives in `pipeline.evaluation`; this file only runs the model and moves the
predictions between ranks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@torch.no_grad()
def predict(predictor: nn.Module, loader, device: torch.device) -> list[dict[str, Any]]:
    """Detections of every image of `loader` by an `EfficientDetForPrediction`, boxes mapped back to original
    pixels."""
    from pipeline.data import to_original_coordinates

    out: list[dict[str, Any]] = []
    for images, targets in loader:
        out.extend(to_original_coordinates(predictor(images.to(device)), targets))
    return out


def gather_predictions(predictions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """All ranks' predictions, one entry per image id (in case a sampler repeats images to even out shards)."""
    from pipeline.evaluation import merge_prediction_shards

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return merge_prediction_shards([predictions])
    gathered: list[list[dict[str, Any]] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, predictions)
    return merge_prediction_shards(part or [] for part in gathered)


def merge_windows(predictions: list[dict[str, Any]], tiling, per_pass: int = 100) -> tuple[list[dict[str, Any]], int]:
    """A sliced validation set's window predictions merged per image (`pipeline.evaluation.merge_tiles`), and the
    detections per image to score: all that the merge keeps (COCO's 100 would cap the recall of an image with
    hundreds of objects); for whole images what a pass keeps (`eval.max_detections`), at least COCO's 100."""
    from pipeline.evaluation import merge_tiles

    if tiling is None:
        return predictions, max(100, per_pass)
    merged = merge_tiles(predictions, tiling.overlap_px)
    return merged, max([100, *(len(p["scores"]) for p in merged)])


def evaluate(
    model: nn.Module,
    loader,
    coco_gt,
    label_map: dict[str, list],
    device: torch.device,
    pr_curve_path: str | None = None,
    postprocess=None,
) -> dict[str, float]:
    """`val_AP`, `val_AP50`, ..., `val_AP_<class>` of `model` on the validation set; identical on every rank.

    `postprocess`: an `effdet_core.PostprocessConfig` (the config's `eval` section; default hard NMS)."""
    from effdet_core import EfficientDetForPrediction
    from pipeline.data import LabelMap
    from pipeline.evaluation import evaluate_coco

    was_training = model.training
    model.eval()
    try:
        predictions = gather_predictions(predict(EfficientDetForPrediction(model, postprocess), loader, device))
    finally:
        model.train(was_training)
    is_rank0 = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    metrics: dict[str, float] = {}
    if is_rank0:
        per_pass = postprocess.max_detections if postprocess is not None else 100
        predictions, max_detections = merge_windows(predictions, getattr(loader.dataset, "tiling", None), per_pass)
        scores = evaluate_coco(
            coco_gt, predictions, LabelMap.from_dict(label_map), pr_curve_path, max_detections=max_detections
        )
        metrics = {f"val_{k}": float(v) for k, v in scores.items() if isinstance(v, int | float)}
        metrics.update({f"val_AP_{name}": float(v) for name, v in scores.get("per_class_AP", {}).items()})
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [metrics]
        dist.broadcast_object_list(box, src=0)  # every rank needs the same numbers (best-epoch choice)
        metrics = box[0]
    return metrics
