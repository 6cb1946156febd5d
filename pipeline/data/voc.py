"""Import a folder of Pascal VOC XML files and their images as a dataset directory.

VOC boxes are 1-based inclusive pixel indices; COCO boxes are continuous, so a VOC box
``xmin..xmax`` becomes ``x = xmin - 1, w = xmax - xmin + 1``. Objects marked ``difficult``
become crowd (ignore) regions: left out of training, neither hit nor miss in evaluation.
The train/val split is a seeded permutation, so the same files and seed give the same split.
"""

from __future__ import annotations

import itertools
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from pipeline.data.layout import (
    DatasetError,
    annotation_path,
    atomic_output_dir,
    images_dir,
    val_indices,
    write_json,
)
from pipeline.data.validate import ValidationReport, validate_dataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class VocObject:
    name: str
    box: tuple[float, float, float, float]  # VOC xmin, ymin, xmax, ymax (1-based, inclusive)
    difficult: bool


@dataclass(frozen=True)
class VocImage:
    xml_path: Path
    image_path: Path
    width: int
    height: int
    objects: tuple[VocObject, ...]


def import_voc(
    voc_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    val_fraction: float = 0.2,
    seed: int = 0,
    overwrite: bool = False,
) -> ValidationReport:
    """Write ``out_dir`` as a dataset directory from every ``*.xml`` under ``voc_dir``.

    Raises `DatasetError` naming the XML file (and object index) of the first bad record, or the
    validation's fatal problems; nothing is written to ``out_dir`` unless the import succeeds.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    voc_dir = Path(voc_dir)
    xml_files = sorted(voc_dir.rglob("*.xml"))
    if not xml_files:
        raise DatasetError(f"{voc_dir}: no Pascal VOC *.xml files found")
    images = [parse_voc_xml(path, voc_dir) for path in xml_files]
    names = sorted({obj.name for im in images for obj in im.objects})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(names)]
    cat_ids = {c["name"]: c["id"] for c in categories}
    in_val = val_indices(len(images), val_fraction, seed)
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        splits = {"train": _empty_split(categories), "val": _empty_split(categories)}
        ann_ids = itertools.count(1)
        for index, image in enumerate(images):
            split = splits["val" if index in in_val else "train"]
            _add_image(split, tmp, voc_dir, image, index + 1, cat_ids, ann_ids)
        for name, split in splits.items():
            write_json(annotation_path(tmp, name), split)
        report = validate_dataset(tmp)
        report.raise_if_fatal()
    report.dataset_dir = str(out_dir)
    return report


def _empty_split(categories: list[dict]) -> dict[str, list]:
    return {"images": [], "annotations": [], "categories": categories}


def _add_image(
    split: dict, out: Path, voc_dir: Path, image: VocImage, image_id: int, cat_ids: dict, ann_ids: Iterator[int]
) -> None:
    relative = os.path.relpath(image.image_path, voc_dir)
    file_name = image.image_path.name if relative.startswith("..") else Path(relative).as_posix()
    destination = images_dir(out) / file_name
    if destination.exists():
        raise DatasetError(f"{image.xml_path}: image file name {file_name!r} is used by two XML files")
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(image.image_path, destination)
    split["images"].append({"id": image_id, "file_name": file_name, "width": image.width, "height": image.height})
    for obj in image.objects:
        xmin, ymin, xmax, ymax = obj.box
        w, h = xmax - xmin + 1, ymax - ymin + 1
        split["annotations"].append(
            {
                "id": next(ann_ids),
                "image_id": image_id,
                "category_id": cat_ids[obj.name],
                "bbox": [xmin - 1, ymin - 1, w, h],
                "area": w * h,
                "iscrowd": int(obj.difficult),
            }
        )


def parse_voc_xml(xml_path: Path, voc_dir: Path) -> VocImage:
    """One VOC annotation file; a malformed record raises `DatasetError` naming file and object."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise DatasetError(f"{xml_path}: malformed XML: {e}") from e
    image_path = _find_image(xml_path, voc_dir, (root.findtext("filename") or "").strip())
    try:
        with Image.open(image_path) as f:
            width, height = f.size
    except Exception as e:  # PIL raises many types for corrupt files
        raise DatasetError(f"{xml_path}: image {image_path}: cannot read image: {e}") from e
    size = root.find("size")
    if size is not None and size.findtext("width") and size.findtext("height"):
        declared = (_number(size, "width", xml_path, "size"), _number(size, "height", xml_path, "size"))
        if declared != (width, height):
            raise DatasetError(f"{xml_path}: <size> says {declared[0]}x{declared[1]}, image is {width}x{height}")
    objects = tuple(_parse_object(obj, xml_path, i) for i, obj in enumerate(root.iter("object")))
    return VocImage(xml_path, image_path, width, height, objects)


def _parse_object(obj: ET.Element, xml_path: Path, index: int) -> VocObject:
    record = f"object {index}"
    name = (obj.findtext("name") or "").strip()
    if not name:
        raise DatasetError(f"{xml_path}: {record}: missing <name>")
    bndbox = obj.find("bndbox")
    if bndbox is None:
        raise DatasetError(f"{xml_path}: {record} ({name}): missing <bndbox>")
    box = tuple(_number(bndbox, tag, xml_path, record) for tag in ("xmin", "ymin", "xmax", "ymax"))
    difficult = (obj.findtext("difficult") or "0").strip() in ("1", "true")
    return VocObject(name, box, difficult)


def _number(parent: ET.Element, tag: str, xml_path: Path, record: str) -> float:
    text = parent.findtext(tag)
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DatasetError(f"{xml_path}: {record}: <{tag}> is {text!r}, not a number") from None
    return int(value) if value.is_integer() else value


def _find_image(xml_path: Path, voc_dir: Path, file_name: str) -> Path:
    """The image beside the XML, in a sibling or top-level JPEGImages folder, by name or by stem."""
    folders = [xml_path.parent, xml_path.parent.parent / "JPEGImages", voc_dir / "JPEGImages"]
    names = [file_name] if file_name else []
    names += [xml_path.stem + suffix for suffix in IMAGE_SUFFIXES]
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise DatasetError(f"{xml_path}: image {file_name or xml_path.stem!r} not found beside it or in JPEGImages/")
