"""How well a detector's anchors fit a dataset's boxes, and the anchor scale (and ratios) that fit them best.

Boxes are measured where the model sees them: resized with their image to fit the model input (as evaluation
resizes), optionally jittered in scale as training augmentation does. A box is *covered* when some anchor overlaps
it with IoU >= 0.5 (the positive threshold of the assignment); an uncovered box still trains its single
force-matched anchor, a weak signal that is the usual cause of poor small-object recall.

`model.anchor_scale: auto` (and `model.anchor_ratios: auto`) are resolved here before training, like YOLO's
autoanchor: the candidate that covers the most boxes wins, ties going to the value closest to the official one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from effdet_core.anchors import anchor_shapes, feature_sizes, octave_scales
from effdet_core.config import EfficientDetConfig, LossConfig, aspect_ratio_pairs

MATCH_IOU = LossConfig().match_threshold  # the assignment's positive threshold
MAX_BOXES = 20000  # boxes measured: a seeded sample beyond this (the statistics do not need more)
SCALE_CANDIDATES = tuple(round(2 ** (k / 4), 3) for k in range(0, 13))  # 1 .. 8, four per octave (+ the config's)
TIE = 0.005  # coverage within half a point of the best counts as a tie


@dataclass(frozen=True)
class AnchorStats:
    """Boxes against one anchor configuration (all at the model input)."""

    box_sizes: np.ndarray  # [n] sqrt(w * h) in model-input px
    best_iou: np.ndarray  # [n] IoU of each box's best anchor
    positives_per_level: np.ndarray  # [L] mean positive anchors per box on each level (force-matches included)
    levels: tuple[int, ...]  # the pyramid levels, min_level..max_level
    anchor_sizes: dict[int, tuple[float, float]]  # level -> (smallest, largest) anchor sqrt-area in px

    @property
    def covered(self) -> float:
        """Share of boxes with an anchor at IoU >= 0.5."""
        return float((self.best_iou >= MATCH_IOU).mean()) if len(self.best_iou) else 1.0

    @property
    def uncovered(self) -> float:
        return 1.0 - self.covered


def input_boxes(
    boxes: Sequence[np.ndarray], image_sizes: Sequence[tuple[int, int]], input_size: tuple[int, int], seed: int = 0
) -> np.ndarray:
    """Per-image boxes [n_i, 4] xyxy original px and (height, width) -> all boxes [n, 4] at the model input,
    resized as the evaluation transform does (fit inside, top-left); a seeded sample of MAX_BOXES at most."""
    height, width = input_size
    scaled = [b * min(height / h, width / w) for b, (h, w) in zip(boxes, image_sizes, strict=True) if len(b)]
    out = np.concatenate(scaled).astype(np.float32) if scaled else np.zeros((0, 4), np.float32)
    if len(out) > MAX_BOXES:
        out = out[np.random.default_rng(seed).choice(len(out), MAX_BOXES, replace=False)]
    return out


def small_box_px(boxes: np.ndarray, quantile: float = 0.1) -> float:
    """The sqrt-area of the dataset's small boxes (10th percentile) at the model input; inf without boxes."""
    if not len(boxes):
        return float("inf")
    sides = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None)
    return float(np.quantile(np.sqrt(sides[:, 0] * sides[:, 1]), quantile))


def records_input_boxes(records, input_size: tuple[int, int]) -> np.ndarray:
    """`input_boxes` of `pipeline.data.ImageRecord`s."""
    return input_boxes([r.boxes for r in records], [(r.height, r.width) for r in records], input_size)


def jitter_scales(boxes: np.ndarray, scale_min: float, scale_max: float, seed: int = 0) -> np.ndarray:
    """Boxes resized about their centres by a factor drawn log-uniformly from [scale_min, scale_max], as the
    training scale jitter resizes the whole image (positions relative to the anchor grid are random anyway)."""
    if scale_min == scale_max == 1.0 or not len(boxes):
        return boxes
    rng = np.random.default_rng(seed)
    factor = np.exp(rng.uniform(math.log(scale_min), math.log(scale_max), (len(boxes), 1))).astype(np.float32)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) / 2 * factor
    return np.concatenate([centre - half, centre + half], axis=1)


def best_anchor_iou(boxes: np.ndarray, config: EfficientDetConfig) -> np.ndarray:
    """IoU of each box [n, 4] (model-input px) with its best anchor under `config`, in O(n * levels * shapes).

    Along each axis the overlap of a box and an anchor of fixed size only shrinks as their centres move apart, so
    on each level the best anchor of each shape is the one centred nearest the box's centre.
    """
    height, width = config.image_size
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # [n, 2] (x, y)
    size = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None)  # [n, 2] (w, h)
    best = np.zeros(len(boxes), np.float64)
    for level_h, level_w in _level_sizes(config):
        stride = np.array([width / level_w, height / level_h])  # (x, y), fractional for uneven sizes
        cells = np.array([level_w, level_h])
        index = np.clip(np.round((centre - stride / 2) / stride), 0, cells - 1)
        anchor_centre = stride / 2 + index * stride  # [n, 2]
        for shape in anchor_shapes(config, *stride):
            anchor_size = np.array(shape)  # [2] (w, h)
            low = np.maximum(centre - size / 2, anchor_centre - anchor_size / 2)
            high = np.minimum(centre + size / 2, anchor_centre + anchor_size / 2)
            inter = np.prod(np.clip(high - low, 0, None), axis=1)
            union = np.prod(size, axis=1) + np.prod(anchor_size) - inter
            best = np.maximum(best, inter / np.maximum(union, 1e-9))
    return best.astype(np.float32)


def positives_per_box(boxes: np.ndarray, config: EfficientDetConfig) -> np.ndarray:
    """Positive anchors of each box [n, 4] (model-input px) on each level [n, L], as the assignment makes them:
    every anchor at IoU >= 0.5, or the single force-matched best anchor of a box that has none.

    Only anchors centred within a window of the box's nearest anchor centre can reach IoU 0.5 (their centres are
    at most half an anchor side apart), so each level and shape costs a [n, K, K] grid of overlaps, not [n, N].
    """
    height, width = config.image_size
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # [n, 2] (x, y)
    size = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None)  # [n, 2] (w, h)
    area = np.prod(size, axis=1)[:, None, None]  # [n, 1, 1]
    levels = _level_sizes(config)
    positives = np.zeros((len(boxes), len(levels)), np.float64)
    best = np.zeros(len(boxes))
    best_level = np.zeros(len(boxes), np.int64)
    for li, (level_h, level_w) in enumerate(levels):
        stride = np.array([width / level_w, height / level_h])
        cells = np.array([level_w, level_h])
        nearest = np.clip(np.round((centre - stride / 2) / stride), 0, cells - 1)  # [n, 2]
        for shape in anchor_shapes(config, *stride):
            anchor = np.array(shape)  # [2] (w, h)
            reach = int(np.ceil((anchor / stride).max() / 2)) + 1
            steps = np.arange(-reach, reach + 1)  # [K]
            overlap = []
            for axis in (0, 1):  # x, then y: [n, K] overlap with the anchors at nearest + steps
                index = nearest[:, axis, None] + steps[None]
                anchor_centre = stride[axis] / 2 + index * stride[axis]
                low = np.maximum(centre[:, axis, None] - size[:, axis, None] / 2, anchor_centre - anchor[axis] / 2)
                high = np.minimum(centre[:, axis, None] + size[:, axis, None] / 2, anchor_centre + anchor[axis] / 2)
                inside = (index >= 0) & (index < cells[axis])
                overlap.append(np.clip(high - low, 0, None) * inside)
            inter = overlap[0][:, None, :] * overlap[1][:, :, None]  # [n, K(y), K(x)]
            iou = inter / np.maximum(area + np.prod(anchor) - inter, 1e-9)
            positives[:, li] += (iou >= MATCH_IOU).sum(axis=(1, 2))
            top = iou.max(axis=(1, 2))
            better = top > best
            best, best_level = np.where(better, top, best), np.where(better, li, best_level)
    forced = best < MATCH_IOU
    positives[np.flatnonzero(forced), best_level[forced]] += 1
    return positives


def anchor_stats(boxes: np.ndarray, config: EfficientDetConfig) -> AnchorStats:
    """Best-anchor IoU and positives per level of every box [n, 4] (model-input px) under `config`'s anchors."""
    sizes = np.sqrt(np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1))
    return AnchorStats(
        box_sizes=sizes,
        best_iou=best_anchor_iou(boxes, config),
        positives_per_level=positives_per_box(boxes, config).mean(axis=0) if len(boxes) else np.zeros(0),
        levels=tuple(range(config.min_level, config.max_level + 1)),
        anchor_sizes=anchor_size_ranges(config),
    )


def coverage(boxes: np.ndarray, config: EfficientDetConfig) -> float:
    """Share of boxes with an anchor at IoU >= 0.5."""
    return float((best_anchor_iou(boxes, config) >= MATCH_IOU).mean()) if len(boxes) else 1.0


def anchor_size_ranges(config: EfficientDetConfig) -> dict[int, tuple[float, float]]:
    """Level -> (smallest, largest) anchor side (sqrt of area) in model-input px over octave scales."""
    octaves = octave_scales(config.num_scales)
    return {
        level: (config.anchor_scale * 2**level * min(octaves), config.anchor_scale * 2**level * max(octaves))
        for level in range(config.min_level, config.max_level + 1)
    }


def _level_sizes(config: EfficientDetConfig) -> list[tuple[int, int]]:
    return feature_sizes(config.image_size, config.min_level, config.max_level)


@dataclass(frozen=True)
class ScaleCandidate:
    scale: float
    covered: float  # share of boxes with an anchor at IoU >= 0.5
    positives: float  # mean positive anchors per box (force-matches included): the training signal per box


def fit_anchor_scale(boxes: np.ndarray, config: EfficientDetConfig) -> tuple[float, list[ScaleCandidate]]:
    """The anchor scale that gives the boxes the most positive anchors without covering fewer of them than
    `config`'s own scale does; ties (within 2%) go to the scale closest to `config`'s. Returns it and every
    candidate measured.

    Positives per box, not coverage alone: in short runs on both synthetic sets, accuracy followed the mean number
    of positives per box (README "Recipe"); a scale that covers more small boxes by shrinking every anchor gives
    each box fewer positives and learned slower.
    """
    scales = sorted({*SCALE_CANDIDATES, float(config.anchor_scale)})
    table = []
    for scale in scales:
        candidate = config.replace(anchor_scale=scale)
        table.append(
            ScaleCandidate(scale, coverage(boxes, candidate), float(positives_per_box(boxes, candidate).sum(1).mean()))
        )
    own = next(c for c in table if c.scale == float(config.anchor_scale))
    eligible = [c for c in table if c.covered >= own.covered - TIE]
    most = max(c.positives for c in eligible)
    tied = [c for c in eligible if c.positives >= 0.98 * most]
    best = min(tied, key=lambda c: abs(math.log2(c.scale / config.anchor_scale)))
    return best.scale, table


def fit_aspect_ratios(boxes: np.ndarray, config: EfficientDetConfig) -> tuple[float, ...] | None:
    """Width/height ratios at the quantiles of the boxes' own shapes (as many as the config has), or None when they
    cover no more boxes than the config's ratios do (then the official ones stay)."""
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    keep = (widths > 0) & (heights > 0)
    if keep.sum() < 10:
        return None
    log_ratio = np.log(widths[keep] / heights[keep])
    k = len(config.aspect_ratios)
    quantiles = [(i + 0.5) / k for i in range(k)]
    ratios = tuple(round(float(np.exp(q)), 3) for q in np.quantile(log_ratio, quantiles))
    fitted = config.replace(aspect_ratios=aspect_ratio_pairs(ratios))
    if coverage(boxes, fitted) <= coverage(boxes, config) + TIE:
        return None
    return ratios


def describe(config: EfficientDetConfig) -> dict[str, object]:
    """The anchor settings of a config, as the user sets them (`model.*` keys)."""
    ratios = [round(x / y, 3) for x, y in config.aspect_ratios]
    return {
        "anchor_scale": config.anchor_scale,
        "anchor_ratios": ratios,
        "num_scales": config.num_scales,
        "min_level": config.min_level,
        "max_level": config.max_level,
    }
