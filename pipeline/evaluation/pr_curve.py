"""Precision-recall curves of a finished pycocotools evaluation, written as a PNG (Agg backend)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pycocotools.cocoeval import COCOeval

from pipeline.data.layout import LabelMap


def plot_pr_curves(evaluator: COCOeval | None, label_map: LabelMap, path: str | os.PathLike) -> Path:
    """Per-class curves at IoU 0.50 and the class mean at IoU 0.50 and 0.50:0.95 (all areas, 100 dets).

    ``evaluator`` must have run ``accumulate()``; None draws empty axes (no detections at all).
    """
    figure = Figure(figsize=(7, 5), dpi=100)  # no pyplot: no global state, safe in worker threads
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    if evaluator is not None:
        recall = evaluator.params.recThrs  # [R]
        precision = evaluator.eval["precision"][:, :, :, 0, -1]  # [T, R, K], -1 where undefined
        cat_index = {cat: k for k, cat in enumerate(evaluator.params.catIds)}
        for name, category_id in zip(label_map.names, label_map.category_ids, strict=True):
            curve = precision[0, :, cat_index[category_id]] if category_id in cat_index else None
            if curve is not None and (curve > -1).any():
                ax.plot(recall, np.clip(curve, 0, None), linewidth=1, label=f"{name} @0.50")
        for iou_slice, style, label in ((slice(0, 1), "k-", "mean @0.50"), (slice(None), "k--", "mean @0.50:0.95")):
            block = precision[iou_slice]  # [t, R, K]
            valid = block > -1
            mean = np.where(valid, block, 0).sum(axis=(0, 2)) / np.maximum(valid.sum(axis=(0, 2)), 1)  # [R]
            ax.plot(recall, mean, style, linewidth=2, label=label)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall (COCO, bbox)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
