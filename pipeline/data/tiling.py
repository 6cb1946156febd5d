"""Windows of large images (`data.tiling`): which windows train, which evaluate, and their pixels.

Training (`training_tiles`): a grid of ``size`` x ``size`` windows stepping by ``stride``, the last row and column
flush with the image's far edges. A box is *whole* in a window that contains all of it; after the grid, each box
whole in none (larger than the overlap, or cut by every window) gets a window centred on it when it fits in one,
and an image holding a box larger than a window gets one whole-image item too. So every box of the split is seen
whole at least once per epoch, and the epoch's length is the number of windows. In a window, a cut box is kept
when at least MIN_VISIBLE of its area lies inside (documented in the README: the model learns objects cut by a
seam, which sliced prediction sees); windows without a box are kept one in EMPTY_KEEP, evenly spaced, as
background. The plan is a function of the annotations only: the same windows on every rank, engine and resume.

Evaluation (`eval_tiles`): every grid window, plus the whole image fitted into the input (for objects larger than a
window), the detections mapped back and merged by `pipeline.evaluation.merge_tiles`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.config.tiling import TilingSpec
from pipeline.data.coco_index import ImageRecord

MIN_VISIBLE = 0.5  # share of a cut box's area inside a training window for the box to be kept there
EMPTY_KEEP = 4  # one in this many windows without boxes trains as background

Window = tuple[int, int, int, int]  # x0, y0, x1, y1 in source px (x1, y1 exclusive)


@dataclass(frozen=True)
class TileRecord:
    """A window of a source image, with the boxes of the source image that it keeps, in window px.

    ``whole`` marks the whole-image item (its window is the full image, fitted into the input like an untiled
    image). Duck-types `ImageRecord` for what reads boxes (`width`, `height`, `boxes`, `labels`)."""

    source: ImageRecord
    window: Window
    boxes: np.ndarray = field(repr=False)  # float32 [n, 4] xyxy window px
    labels: np.ndarray = field(repr=False)  # int64 [n]
    whole: bool = False

    @property
    def image_id(self) -> int:
        return self.source.image_id

    @property
    def width(self) -> int:
        return self.window[2] - self.window[0]

    @property
    def height(self) -> int:
        return self.window[3] - self.window[1]


def axis_starts(length: int, size: int, stride: int) -> list[int]:
    """Window starts along one axis: 0, stride, ..., and the last flush with the far edge (0 alone when
    ``length <= size``)."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    return [*starts, length - size]


def tile_windows(height: int, width: int, spec: TilingSpec) -> list[Window]:
    """The grid of windows over an image, row by row. Windows are ``spec.size`` square, cut to the image where it
    is smaller than a window (the dataset pads them back: `crop_window`)."""
    ys = axis_starts(height, spec.size, spec.stride)
    xs = axis_starts(width, spec.size, spec.stride)
    return [(x, y, min(x + spec.size, width), min(y + spec.size, height)) for y in ys for x in xs]


def needs_tiles(record: ImageRecord, spec: TilingSpec) -> bool:
    """More than one window: the image is larger than a window on some side."""
    return record.height > spec.size or record.width > spec.size


def boxes_in_window(
    boxes: np.ndarray, labels: np.ndarray, window: Window, min_visible: float
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [n, 4] xyxy source px clipped to `window` and shifted to its origin, keeping those with at least
    `min_visible` of their area inside."""
    x0, y0, x1, y1 = window
    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(x0, x1)
    clipped[:, 1::2] = clipped[:, 1::2].clip(y0, y1)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (inside > 0) & (inside >= min_visible * area)
    shifted = clipped[keep] - np.float32([x0, y0, x0, y0])
    return shifted.astype(np.float32), labels[keep]


def _whole_in(boxes: np.ndarray, windows: list[Window]) -> np.ndarray:
    """[w, n] bool: box n lies entirely inside window w."""
    if not windows or not len(boxes):
        return np.zeros((len(windows), len(boxes)), bool)
    w = np.asarray(windows, np.float32)[:, None, :]  # [w, 1, 4]
    b = boxes[None]  # [1, n, 4]
    return (b[..., 0] >= w[..., 0]) & (b[..., 1] >= w[..., 1]) & (b[..., 2] <= w[..., 2]) & (b[..., 3] <= w[..., 3])


def _centred_window(box: np.ndarray, height: int, width: int, size: int) -> Window:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x = int(np.clip(round(cx - size / 2), 0, max(0, width - size)))
    y = int(np.clip(round(cy - size / 2), 0, max(0, height - size)))
    return x, y, min(x + size, width), min(y + size, height)


def plan_windows(record: ImageRecord, spec: TilingSpec) -> tuple[list[Window], bool]:
    """The training windows of one image and whether it needs a whole-image item (a box larger than a window)."""
    windows = tile_windows(record.height, record.width, spec)
    boxes = record.boxes
    covered = _whole_in(boxes, windows).any(axis=0)
    too_large = np.zeros(len(boxes), bool)
    for j in np.flatnonzero(~covered):
        if covered[j]:
            continue  # a window centred on an earlier box took it in
        box = boxes[j]
        if box[2] - box[0] > spec.size or box[3] - box[1] > spec.size:
            too_large[j] = True
            continue
        windows.append(_centred_window(box, record.height, record.width, spec.size))
        covered |= _whole_in(boxes, windows[-1:])[0]
    return windows, bool(too_large.any())


def training_tiles(records: list[ImageRecord], spec: TilingSpec) -> list[TileRecord]:
    """The training items of a split: images no larger than a window stay one item each; larger ones become
    their planned windows (see the module docstring). In record order, then window order."""
    out: list[TileRecord] = []
    for record in records:
        if not needs_tiles(record, spec):
            out.append(TileRecord(record, (0, 0, record.width, record.height), record.boxes, record.labels))
            continue
        windows, whole = plan_windows(record, spec)
        empty = 0
        for window in windows:
            boxes, labels = boxes_in_window(record.boxes, record.labels, window, MIN_VISIBLE)
            if not len(boxes):
                empty += 1
                if (empty - 1) % EMPTY_KEEP:
                    continue
            out.append(TileRecord(record, window, boxes, labels))
        if whole:
            out.append(TileRecord(record, (0, 0, record.width, record.height), record.boxes, record.labels, True))
    return out


def eval_tiles(records: list[ImageRecord], spec: TilingSpec) -> list[TileRecord]:
    """Evaluation items: every grid window of each large image and its whole-image pass; an image no larger than a
    window is one window."""
    out: list[TileRecord] = []
    for record in records:
        full = (0, 0, record.width, record.height)
        if not needs_tiles(record, spec):  # one window, padded as in training: the same scale at the input
            out.append(TileRecord(record, full, record.boxes, record.labels))
            continue
        for window in tile_windows(record.height, record.width, spec):
            boxes, labels = boxes_in_window(record.boxes, record.labels, window, 0.0)
            out.append(TileRecord(record, window, boxes, labels))
        out.append(TileRecord(record, full, record.boxes, record.labels, True))
    return out


def crop_window(image: np.ndarray, window: Window, size: int, fill: tuple[int, int, int]) -> np.ndarray:
    """The window's pixels uint8 [size, size, 3]: a view-sized copy, padded bottom/right with `fill` where the
    image is smaller than a window (so every window has the same scale at the model input)."""
    x0, y0, x1, y1 = window
    crop = image[y0:y1, x0:x1]
    if crop.shape[:2] == (size, size):
        return np.ascontiguousarray(crop)
    out = np.empty((size, size, 3), np.uint8)
    out[...] = np.asarray(fill, np.uint8)
    out[: crop.shape[0], : crop.shape[1]] = crop
    return out
