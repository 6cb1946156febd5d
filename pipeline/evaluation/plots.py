"""Figures logged with every training run: loss and mAP curves, validation images with predicted and true boxes,
and the training boxes' sizes against the anchors."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: workers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

LOSS_KEYS = ("train_loss", "train_class_loss", "train_box_loss")
MAP_KEYS = ("val_AP", "val_AP50", "val_AP75")


def plot_curves(history: Mapping[str, Sequence[tuple[int, float]]], path: str | os.PathLike) -> Path:
    """Two panels: training losses and validation AP per optimizer step. `history[key]` = [(step, value), ...]."""
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, keys, title in ((ax_loss, LOSS_KEYS, "training loss"), (ax_map, MAP_KEYS, "validation COCO AP")):
        for key in keys:
            points = sorted(history.get(key, ()))
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key)
        ax.set_xlabel("optimizer step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _draw_boxes(ax, boxes: np.ndarray, labels: np.ndarray, names: Sequence[str], color: str, scores=None) -> None:
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes).reshape(-1, 4)):
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=1.5))
        label = int(labels[i])
        text = names[label] if 0 <= label < len(names) else str(label)
        if scores is not None:
            text = f"{text} {float(scores[i]):.2f}"
        ax.text(x1, y1, text, color="white", fontsize=6, va="bottom", bbox={"facecolor": color, "pad": 1, "lw": 0})


def detection_grid(
    images: Sequence[np.ndarray],
    predictions: Sequence[Mapping[str, np.ndarray]],
    truths: Sequence[Mapping[str, np.ndarray]],
    class_names: Sequence[str],
    path: str | os.PathLike,
    score_threshold: float = 0.3,
) -> Path:
    """A grid of images (uint8 HxWx3) with true boxes in green and predictions above the threshold in red."""
    n = max(1, len(images))
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, pred, truth in zip(axes.flat, images, predictions, truths, strict=False):
        ax.imshow(image)
        _draw_boxes(ax, truth["boxes"], truth["labels"], class_names, "tab:green")
        keep = np.asarray(pred["scores"]) >= score_threshold
        _draw_boxes(
            ax,
            np.asarray(pred["boxes"])[keep],
            np.asarray(pred["labels"])[keep],
            class_names,
            "tab:red",
            scores=np.asarray(pred["scores"])[keep],
        )
    fig.suptitle(f"validation: true (green), predicted score >= {score_threshold} (red)", fontsize=9)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def anchor_plot(analysis, path: str | os.PathLike) -> Path:
    """Histogram of the training boxes' sizes (sqrt of area, model-input px, log scale) under the anchor sizes of
    each pyramid level (`analysis`: a `pipeline.data.analyze.Analysis`)."""
    sizes = analysis.nominal.box_sizes
    fig, ax = plt.subplots(figsize=(8, 3.6))
    positive = sizes[sizes > 0]
    low = max(1.0, float(positive.min()) / 1.5) if len(positive) else 1.0
    anchor_sizes = analysis.nominal.anchor_sizes  # level -> (smallest, largest) anchor side
    high = max(float(positive.max()) * 1.5 if len(positive) else 2.0, *(hi for _, hi in anchor_sizes.values()))
    bins = np.geomspace(low, high, 40)
    ax.hist(positive, bins=bins, color="tab:blue", alpha=0.7, label=f"{len(positive)} training boxes")
    for index, (level, (lo, hi)) in enumerate(anchor_sizes.items()):
        ax.axvspan(lo, hi, color=plt.cm.viridis(index / max(1, len(analysis.nominal.levels))), alpha=0.2)
        ax.text(math.sqrt(lo * hi), ax.get_ylim()[1] * 0.92, f"P{level}", ha="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("box size sqrt(w*h) at the model input, px (bands: anchor sizes per level)")
    ax.set_ylabel("boxes")
    ax.set_title(f"{analysis.nominal.uncovered:.0%} of the boxes have no anchor at IoU >= 0.5", fontsize=10)
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
