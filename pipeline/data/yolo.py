"""YOLO-layout datasets to a dataset directory and back (`data import-yolo`, `data export-yolo`).

The pixel box of a label line is ``x = (cx - w/2) W, y = (cy - h/2) H, w W, h H``: COCO's continuous coordinates,
so the way back is the same arithmetic, written with 10 significant digits (a thousandth of a pixel on a
20,000 px image): a round trip is exact to the pixel. Class id ``k`` is category id ``k + 1``; on export the
categories, in id order, become classes ``0..K-1`` under their names. YOLO has no ignore flag: crowd regions are
left out of an export, and it says how many. The layouts read and the rules for a label line are in
`pipeline.data.yolo_labels`. Import is all or nothing: every problem is reported before anything is written.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.data import storage
from pipeline.data.layout import (
    SPLITS,
    DatasetError,
    annotation_path,
    atomic_output_dir,
    images_dir,
    val_indices,
    write_json,
)
from pipeline.data.validate import ValidationReport, validate_dataset
from pipeline.data.yolo_labels import YoloImage, find_source, raise_problems, read_images, relative_label_name

DIGITS = 10  # significant digits of an exported coordinate


def import_yolo(
    yolo_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    names_file: str | os.PathLike | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    overwrite: bool = False,
) -> ValidationReport:
    """Write ``out_dir`` as a dataset directory from a YOLO folder (or its ``data.yaml``).

    The data.yaml's ``train`` and ``val`` are kept as they are; without a ``val`` (or in the flat Darknet layout)
    ``val_fraction`` of the images, a seeded permutation, become the validation split. Raises `DatasetError`
    listing every malformed label line as ``file:line``; nothing is written unless the import succeeds.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    root = Path(yolo_dir)
    source = find_source(root, Path(names_file) if names_file else None)
    read, problems = read_images(source)
    raise_problems(root, problems)
    splits = _train_val(read, val_fraction, seed)
    categories = [{"id": k + 1, "name": name} for k, name in sorted(source.names.items())]
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        _write_splits(tmp, splits, categories)
        report = validate_dataset(tmp)
        report.raise_if_fatal()
    report.dataset_dir = str(out_dir)
    return report


def _train_val(read: dict[str, list[YoloImage]], val_fraction: float, seed: int) -> dict[str, list[YoloImage]]:
    if "val" in read:
        return {"train": read["train"], "val": read["val"]}
    images = read.get("train", []) + read.get("all", [])
    val = val_indices(len(images), val_fraction, seed)
    return {
        "train": [im for i, im in enumerate(images) if i not in val],
        "val": [im for i, im in enumerate(images) if i in val],
    }


def _write_splits(out: Path, splits: dict[str, list[YoloImage]], categories: list[dict]) -> None:
    image_ids, ann_ids = itertools.count(1), itertools.count(1)
    seen: dict[str, Path] = {}
    for split, images in splits.items():
        data: dict[str, list] = {"images": [], "annotations": [], "categories": categories}
        for image in images:
            if image.file_name in seen:
                raise DatasetError(f"{image.image_path}: its name {image.file_name!r} is also {seen[image.file_name]}")
            seen[image.file_name] = image.image_path
            destination = images_dir(out) / image.file_name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image.image_path, destination)
            image_id = next(image_ids)
            data["images"].append(
                {"id": image_id, "file_name": image.file_name, "width": image.width, "height": image.height}
            )
            for box in image.boxes:
                x, y, w, h = (round(v, 6) for v in box.box)  # float noise of the normalised arithmetic
                data["annotations"].append(
                    {
                        "id": next(ann_ids),
                        "image_id": image_id,
                        "category_id": box.class_id + 1,
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
        write_json(annotation_path(out, split), data)


@dataclass(frozen=True)
class ExportSummary:
    out_dir: str
    images: dict[str, int]
    boxes: dict[str, int]
    crowd_left_out: int

    def summary(self) -> str:
        counts = ", ".join(f"{s}: {self.images[s]} images, {self.boxes[s]} boxes" for s in self.images)
        crowd = (
            f"; {self.crowd_left_out} crowd region(s) left out (YOLO has no ignore flag)" if self.crowd_left_out else ""
        )
        return f"{self.out_dir}: {counts}{crowd}"


def export_yolo(dataset_dir: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False) -> ExportSummary:
    """Write a dataset directory as the Ultralytics layout: ``images/{train,val}/``, ``labels/{train,val}/*.txt``
    and a ``data.yaml`` naming the classes (an image without boxes gets an empty label file: a background)."""
    if storage.is_remote(os.fspath(dataset_dir)):
        raise DatasetError(f"{dataset_dir}: export-yolo reads a local dataset directory; copy the prefix down first")
    dataset_dir = Path(dataset_dir)
    validate_dataset(dataset_dir, check_images="none").raise_if_fatal()
    splits = {s: json.loads(Path(annotation_path(dataset_dir, s)).read_text(encoding="utf-8")) for s in SPLITS}
    categories = sorted(splits["train"]["categories"], key=lambda c: int(c["id"]))
    classes = {int(c["id"]): k for k, c in enumerate(categories)}
    images, boxes, crowd = {}, {}, 0
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        for split, data in splits.items():
            boxes[split], dropped = _export_split(dataset_dir, tmp, split, data, classes)
            images[split], crowd = len(data["images"]), crowd + dropped
        names = {k: str(c["name"]) for k, c in enumerate(categories)}
        meta = {"train": "images/train", "val": "images/val", "nc": len(names), "names": names}
        (tmp / "data.yaml").write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
    return ExportSummary(str(out_dir), images, boxes, crowd)


def _export_split(src: Path, out: Path, split: str, data: dict, classes: dict[int, int]) -> tuple[int, int]:
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    written = crowd = 0
    for image in data["images"]:
        width, height = float(image["width"]), float(image["height"])
        lines = []
        for ann in by_image.get(int(image["id"]), []):
            if ann.get("iscrowd", 0):
                crowd += 1
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            values = ((x + w / 2) / width, (y + h / 2) / height, w / width, h / height)
            lines.append(" ".join([str(classes[int(ann["category_id"])])] + [f"{v:.{DIGITS}g}" for v in values]))
        name = image["file_name"].removeprefix(f"{split}/")  # an imported set's train/a.jpg is images/train/a.jpg
        destination = out / "images" / split / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(images_dir(src)) / image["file_name"], destination)
        label = out / "labels" / split / relative_label_name(name)
        if label.exists():  # a.jpg and a.png side by side: YOLO gives both the same label file
            raise DatasetError(
                f"{src}: {split} image {image['file_name']!r} shares its label file {label.name} with another"
            )
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        written += len(lines)
    return written, crowd
