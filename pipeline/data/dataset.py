"""`DetectionDataset`: one split of a dataset directory as (image, target) pairs for the model.

An item is ``image`` float [3,H,W] normalised, and a target dict with ``boxes`` float32 [n,4]
xyxy model-input px, ``labels`` int64 [n], ``image_id`` int, ``scale`` float (model-input px per
original px) and ``orig_size`` (h, w). With `data.tiling` an item is a window (`pipeline.data.tiling`): its
target adds ``window`` (x0, y0, x1, y1 original px) and ``whole`` (the whole-image pass). `collate_fn` stacks
images to [B,3,H,W].
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.coco_index import ImageRecord, load_split
from pipeline.data.decode import DEFAULT_MAX_IMAGE_PIXELS, decode_rgb, image_size
from pipeline.data.layout import DatasetError, LabelMap, images_dir
from pipeline.data.storage import Location, ObjectReader, StorageError
from pipeline.data.tiling import TileRecord, TilingSpec, crop_window, eval_tiles, training_tiles
from pipeline.data.transforms import DetectionTransform

Target = dict[str, Any]


class DetectionDataset(Dataset):
    """One split (``"train"`` or ``"val"``) of a dataset directory, local or in an object store.

    ``coco`` is the split's pycocotools ground truth (for `pipeline.evaluation.evaluate_coco`),
    ``label_map`` the category-id <-> label map (the split's own unless one is given). ``cache_dir`` keeps a
    remote dataset's images on this node's disk after their first read (`pipeline.data.storage.ObjectReader`).
    """

    def __init__(
        self,
        dataset_dir: Location,
        split: str,
        transform: DetectionTransform | None,
        label_map: LabelMap | None = None,
        cache_dir: str | None = None,
        tiling: TilingSpec | None = None,
        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        self.dataset_dir = os.fspath(dataset_dir)
        self.split = split
        self.transform = transform
        self.coco, self.label_map, self.images = load_split(dataset_dir, split, label_map)
        self.reader = ObjectReader.for_images(images_dir(dataset_dir), cache_dir)
        self.tiling = tiling
        self.max_pixels = max_pixels
        # the items: whole images, or windows (`pipeline.data.tiling`): training windows for train, every window
        # and the whole-image pass for evaluation
        self.records: list[ImageRecord] | list[TileRecord] = self.images
        if tiling is not None:
            plan = training_tiles if split == "train" else eval_tiles
            self.records = plan(self.images, tiling)
        self._decoded: tuple[Any, np.ndarray] | None = None  # (path, pixels) of the last image decoded whole

    def __len__(self) -> int:
        return len(self.records)

    def __getstate__(self) -> dict[str, Any]:
        """What a loader process started by forkserver/spawn receives: not `coco`, the pycocotools index (hundreds of
        MB for COCO), which only evaluation in the main process reads."""
        return {**self.__dict__, "coco": None, "_decoded": None}

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, Target]:
        """``key``: an index, or ``(index, seed)`` as `pipeline.data.samplers.SeededSampler` gives them, which
        reseeds a training transform first (the image's augmentation then depends on nothing else)."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        if seed is not None and self.transform.train:
            self.transform.reseed(seed)
        record = self.records[index]
        if isinstance(record, TileRecord) and not record.whole:
            return self._window_item(record)
        source = record.source if isinstance(record, TileRecord) else record
        min_size = self.transform.min_source_size(source.height, source.width)
        # uint8 [h', w', 3]: the file's size, or a JPEG decoded smaller
        image = read_rgb(source, min_size, self.reader, self.max_pixels)
        # decoded px per original px: 1, or about 1/2, 1/4, 1/8 (sides round up, so each axis has its own)
        shrink_y, shrink = image.shape[0] / source.height, image.shape[1] / source.width
        boxes = np.asarray(source.boxes, np.float32).reshape(-1, 4) * np.float32([shrink, shrink_y] * 2)
        tensor, boxes, labels, scale = self.transform(image, boxes, source.labels)
        target = {
            "boxes": torch.from_numpy(boxes),  # float32 [n, 4] xyxy model-input px
            "labels": torch.from_numpy(labels),  # int64 [n]
            "image_id": source.image_id,
            "scale": float(scale * shrink),  # model-input px per original px
            "orig_size": (source.height, source.width),
        }
        if isinstance(record, TileRecord):  # the whole-image pass of a sliced image
            target.update(window=record.window, whole=True)
        return tensor, target

    def _window_item(self, record: TileRecord) -> tuple[torch.Tensor, Target]:
        """A window at native resolution, padded to the window size; ``window`` in the target places it."""
        fill = tuple(round(255 * m) for m in self.transform.mean)
        pixels = crop_window(self._decode_whole(record.source), record.window, self.tiling.size, fill)
        tensor, boxes, labels, scale = self.transform(pixels, record.boxes, record.labels)
        target = {
            "boxes": torch.from_numpy(boxes),  # float32 [n, 4] xyxy model-input px of the window
            "labels": torch.from_numpy(labels),
            "image_id": record.image_id,
            "scale": float(scale),  # model-input px per original px
            "orig_size": (record.source.height, record.source.width),
            "window": record.window,  # x0, y0, x1, y1 original px
            "whole": False,
        }
        return tensor, target

    def _decode_whole(self, source: ImageRecord) -> np.ndarray:
        """The source image at full resolution; the last one is kept, since a sliced image's windows come in a row
        (one image's pixels per process: memory stays bounded by the largest image)."""
        if self._decoded is None or self._decoded[0] != source.path:
            self._decoded = (source.path, read_rgb(source, None, self.reader, self.max_pixels))
        return self._decoded[1]


def read_rgb(
    record: ImageRecord,
    min_size: tuple[int, int] | None = None,
    reader: ObjectReader | None = None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> np.ndarray:
    """The record's image as uint8 [h, w, 3] (a JPEG possibly decoded smaller, at least `min_size` (h, w): see
    `pipeline.data.decode`); a missing or corrupt file, or one whose size differs from the annotations', names the
    image id."""
    try:
        data = (reader or ObjectReader()).read(record.path)
        height, width = image_size(data)
        if (height, width) == (record.height, record.width):
            image = decode_rgb(data, min_size, max_pixels)
    except StorageError as e:
        raise DatasetError(f"image id {record.image_id}: {e}") from e
    except Exception as e:  # PIL and simplejpeg raise many types for unreadable files
        raise DatasetError(f"{record.path}: image id {record.image_id}: cannot read image: {e}") from e
    if (height, width) != (record.height, record.width):
        raise DatasetError(
            f"{record.path}: image id {record.image_id}: image is {width}x{height}, "
            f"annotations say {record.width}x{record.height}"
        )
    return image


def collate_fn(batch: list[tuple[torch.Tensor, Target]]) -> tuple[torch.Tensor, list[Target]]:
    """Stack images to [B, 3, H, W]; targets stay a list of dicts (their box counts differ)."""
    images, targets = zip(*batch, strict=True)
    return torch.stack(images), list(targets)


def to_original_coordinates(detections: list[dict[str, torch.Tensor]], targets: list[Target]) -> list[dict[str, Any]]:
    """Model detections (input px) -> evaluation predictions in original px, one per item.

    ``detections`` as `EfficientDetForPrediction` returns them; ``targets`` the batch's targets.
    Returns ``{"image_id", "boxes" ndarray [k,4] xyxy original px, "scores" [k], "labels" [k]}``, plus ``window``
    and ``whole`` for a window of a sliced image (`pipeline.evaluation.merge_tiles` joins an image's windows).
    """
    predictions = []
    for det, target in zip(detections, targets, strict=True):
        height, width = target["orig_size"]
        x0, y0, x1, y1 = target.get("window", (0, 0, width, height))
        boxes = det["boxes"].detach().float().cpu().numpy().reshape(-1, 4) / target["scale"]
        if not target.get("whole"):  # a window: from its origin to the image's
            boxes += np.float32([x0, y0, x0, y0])
        boxes[:, 0::2] = boxes[:, 0::2].clip(x0, x1)  # padding maps beyond the image (window): clip it away
        boxes[:, 1::2] = boxes[:, 1::2].clip(y0, y1)
        prediction = {
            "image_id": int(target["image_id"]),
            "boxes": boxes,
            "scores": det["scores"].detach().float().cpu().numpy().reshape(-1),
            "labels": det["labels"].detach().cpu().numpy().astype(np.int64).reshape(-1),
        }
        if "window" in target:  # one window of a sliced image: `pipeline.evaluation.merge_tiles` joins them
            prediction.update(window=tuple(target["window"]), whole=bool(target["whole"]))
        predictions.append(prediction)
    return predictions
