"""COCO box evaluation with pycocotools on predictions in original image coordinates.

`evaluate_coco` scores a list of per-image predictions against a pycocotools ground truth and
returns AP, AP50, AP75, APs, APm, APl, AR100 and per-class AP; `merge_prediction_shards` joins
the prediction lists gathered from DDP ranks so that each image counts exactly once.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.data.layout import LabelMap
from pipeline.evaluation.pr_curve import plot_pr_curves

# names of COCOeval.stats entries used here (index into the 12-value stats vector)
STAT_INDEX: dict[str, int] = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5, "AR100": 8}

Prediction = dict[str, Any]  # {"image_id": int, "boxes" [n,4] xyxy px, "scores" [n], "labels" [n] 0-based}


def merge_prediction_shards(shards: Iterable[Sequence[Prediction]]) -> list[Prediction]:
    """One prediction entry per image id (per window of a sliced image), in image-id order; the first shard's
    entry wins.

    Duplicates come from samplers that pad shards (torch's DistributedSampler repeats images).
    """
    merged: dict[tuple, Prediction] = {}
    for shard in shards:
        for prediction in shard:  # a sliced image's windows are entries of their own (`merge_tiles` joins them)
            key = (int(prediction["image_id"]), tuple(prediction.get("window", ())), bool(prediction.get("whole")))
            merged.setdefault(key, prediction)
    return [merged[key] for key in sorted(merged)]


def coco_result(image_id: int, category_id: int, box_xyxy: Sequence[float], score: float) -> dict[str, Any]:
    """One COCO result record ``{"image_id", "category_id", "bbox" [x, y, w, h], "score"}`` from an xyxy box."""
    x1, y1, x2, y2 = box_xyxy
    return {
        "image_id": int(image_id),
        "category_id": int(category_id),
        "bbox": [x1, y1, x2 - x1, y2 - y1],
        "score": score,
    }


def predictions_to_coco_results(predictions: Sequence[Prediction], label_map: LabelMap) -> list[dict[str, Any]]:
    """COCO result records of per-image predictions (0-based labels mapped to the dataset's category ids)."""
    results = []
    for prediction in predictions:
        boxes = np.asarray(prediction["boxes"], dtype=np.float64).reshape(-1, 4)  # [n, 4] xyxy
        scores = np.asarray(prediction["scores"], dtype=np.float64).reshape(-1)
        labels = np.asarray(prediction["labels"]).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"image id {prediction['image_id']}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels"
            )
        for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist(), strict=True):
            category_id = label_map.label_to_category_id(int(label))
            results.append(coco_result(prediction["image_id"], category_id, box, score))
    return results


def evaluate_coco(
    coco_gt: COCO,
    predictions: Sequence[Prediction],
    label_map: LabelMap,
    pr_curve_path: str | os.PathLike | None = None,
    image_ids: Sequence[int] | None = None,
    max_detections: int = 100,
) -> dict[str, Any]:
    """COCO box metrics of ``predictions`` (original px) over ``image_ids`` (default: all GT images).

    Returns floats AP, AP50, AP75, APs, APm, APl, AR100 (-1.0 where undefined, as pycocotools
    does) and ``per_class_AP`` (name -> AP at IoU 0.50:0.95). Writes a precision-recall PNG to
    ``pr_curve_path`` when given. Predictions for images outside the ground truth are an error.
    ``max_detections`` (at least COCO's 100) is the per-image count AP and AR100 score: raised for images with
    more objects than that (sliced large images), where COCO's 100 would cap the recall.
    """
    known = set(coco_gt.getImgIds())
    unknown = sorted({int(p["image_id"]) for p in predictions} - known)
    if unknown:
        raise ValueError(f"predictions for image ids {unknown[:10]} that are not in the ground truth")
    if len({int(p["image_id"]) for p in predictions}) != len(predictions):
        raise ValueError("several prediction entries for one image id; merge shards with merge_prediction_shards")
    results = predictions_to_coco_results(predictions, label_map)
    if not results:
        return _empty_metrics(label_map, pr_curve_path)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.imgIds = sorted(known if image_ids is None else {int(i) for i in image_ids})
        evaluator.params.maxDets = [1, 10, max(100, int(max_detections))]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    metrics: dict[str, Any] = summary_at_max_detections(evaluator)
    metrics["per_class_AP"] = per_class_ap(evaluator, label_map)
    if pr_curve_path is not None:
        plot_pr_curves(evaluator, label_map, pr_curve_path)
    return metrics


def summary_at_max_detections(evaluator: COCOeval) -> dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl and AR100 at the evaluator's largest max-detections setting: what
    `COCOeval.summarize` gives for 100, and what it cannot give for another count (it looks 100 up by value)."""
    precision = evaluator.eval["precision"]  # [T iou, R recall, K classes, A areas, M max-dets]
    recall = evaluator.eval["recall"]  # [T, K, A, M]
    iou = list(np.round(evaluator.params.iouThrs, 2))

    def mean(values: np.ndarray) -> float:
        values = values[values > -1]
        return float(values.mean()) if values.size else -1.0

    return {
        "AP": mean(precision[:, :, :, 0, -1]),
        "AP50": mean(precision[iou.index(0.5), :, :, 0, -1]),
        "AP75": mean(precision[iou.index(0.75), :, :, 0, -1]),
        "APs": mean(precision[:, :, :, 1, -1]),
        "APm": mean(precision[:, :, :, 2, -1]),
        "APl": mean(precision[:, :, :, 3, -1]),
        "AR100": mean(recall[:, :, 0, -1]),
    }


def per_class_ap(evaluator: COCOeval, label_map: LabelMap) -> dict[str, float]:
    """AP at IoU 0.50:0.95, all areas, 100 detections, per class (-1.0 for a class without GT)."""
    precision = evaluator.eval["precision"]  # [T iou, R recall, K classes, A areas, M max-dets]
    cat_index = {cat: k for k, cat in enumerate(evaluator.params.catIds)}
    out = {}
    for name, category_id in zip(label_map.names, label_map.category_ids, strict=True):
        values = precision[:, :, cat_index[category_id], 0, -1] if category_id in cat_index else np.array([-1.0])
        values = values[values > -1]
        out[name] = float(values.mean()) if values.size else -1.0
    return out


def _empty_metrics(label_map: LabelMap, pr_curve_path: str | os.PathLike | None) -> dict[str, Any]:
    """No detections at all: every metric is 0 (pycocotools cannot load an empty result list)."""
    metrics: dict[str, Any] = {name: 0.0 for name in STAT_INDEX}
    metrics["per_class_AP"] = {name: 0.0 for name in label_map.names}
    if pr_curve_path is not None:
        plot_pr_curves(None, label_map, pr_curve_path)
    return metrics
