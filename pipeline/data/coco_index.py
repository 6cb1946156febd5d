"""Reading one split of a dataset directory with pycocotools into per-image training records.

Boxes are converted to xyxy original pixels and clipped to the image (the fixable problem that
validation counts); crowd annotations are left out of the training records but stay in the
pycocotools ground truth used for evaluation.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from pipeline.data import storage
from pipeline.data.layout import DatasetError, LabelMap, annotation_path, image_file, images_dir
from pipeline.data.validate import clip_bbox, complete_annotations


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split: file, size and its non-crowd boxes in original pixels."""

    image_id: int
    path: storage.Location  # a local Path, or an object URI
    width: int
    height: int
    boxes: np.ndarray  # float32 [n, 4] xyxy original px, clipped to the image
    labels: np.ndarray  # int64 [n], 0-based contiguous labels


def coco_from_dict(data: dict[str, Any]) -> COCO:
    """A pycocotools COCO built from a parsed dict, without its progress prints; annotations without `iscrowd` or
    `area` (as many exporters write them) get the defaults that validation reports."""
    complete_annotations(data.get("annotations", []))
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco(path: storage.Location) -> COCO:
    """A pycocotools COCO read from a JSON file or object; a malformed or unreadable one raises `DatasetError`."""
    try:
        data = json.loads(storage.read_text(path))
    except storage.StorageError:
        raise
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read COCO JSON: {e}") from e
    return coco_from_dict(data)


def build_records(coco: COCO, image_root: storage.Location, label_map: LabelMap) -> list[ImageRecord]:
    """Training records for every image of ``coco`` (images without boxes are kept)."""
    records = []
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        if not image_file(image_root, info["file_name"])[1]:
            raise DatasetError(f"image id {image_id}: file_name {info['file_name']!r} resolves outside {image_root}")
        width, height = int(info["width"]), int(info["height"])
        boxes, labels = [], []
        for ann in coco.imgToAnns.get(image_id, []):
            if ann.get("iscrowd", 0):
                continue  # crowd regions are ignored in training
            x1, y1, x2, y2 = clip_bbox(ann["bbox"], width, height)
            if x2 <= x1 or y2 <= y1:
                continue  # validation reports these as fatal; never feed them to the model
            boxes.append((x1, y1, x2, y2))
            labels.append(label_map.category_id_to_label(ann["category_id"]))
        records.append(
            ImageRecord(
                image_id=int(image_id),
                path=storage.join(image_root, info["file_name"]),
                width=width,
                height=height,
                boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                labels=np.asarray(labels, dtype=np.int64),
            )
        )
    return records


def load_split(
    dataset_dir: storage.Location, split: str, label_map: LabelMap | None = None
) -> tuple[COCO, LabelMap, list[ImageRecord]]:
    """The pycocotools ground truth, label map and training records of one split.

    ``label_map`` (e.g. the one a checkpoint carries) defaults to the split's own categories.
    """
    coco = load_coco(annotation_path(dataset_dir, split))
    label_map = label_map or LabelMap.from_categories(coco.dataset["categories"])
    return coco, label_map, build_records(coco, images_dir(dataset_dir), label_map)
