"""COCO evaluation (pycocotools) of detections in original image coordinates, and PR-curve plots."""

from pipeline.evaluation.coco_eval import (
    STAT_INDEX,
    evaluate_coco,
    merge_prediction_shards,
    per_class_ap,
    predictions_to_coco_results,
)
from pipeline.evaluation.pr_curve import plot_pr_curves

__all__ = [
    "STAT_INDEX",
    "evaluate_coco",
    "merge_prediction_shards",
    "per_class_ap",
    "plot_pr_curves",
    "predictions_to_coco_results",
]
