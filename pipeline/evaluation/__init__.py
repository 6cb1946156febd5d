"""COCO evaluation (pycocotools) of detections in original image coordinates, PR curves and the run's plots.

Owns: `coco_eval` (scoring, DDP shard merging), `tile_merge` (a sliced image's windows into one prediction),
`pr_curve`, `plots` (loss/AP curves, detection grids, the anchor
plot; matplotlib). May import: `pipeline.data` (the label map), `pipeline.config`; the training loop, the
registry and the CLI build on it.
"""

from pipeline.evaluation.coco_eval import (
    STAT_INDEX,
    evaluate_coco,
    merge_prediction_shards,
    per_class_ap,
    predictions_to_coco_results,
)
from pipeline.evaluation.pr_curve import plot_pr_curves
from pipeline.evaluation.tile_merge import merge_tiles

__all__ = [
    "STAT_INDEX",
    "evaluate_coco",
    "merge_prediction_shards",
    "merge_tiles",
    "per_class_ap",
    "plot_pr_curves",
    "predictions_to_coco_results",
]
