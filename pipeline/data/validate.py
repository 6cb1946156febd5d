"""Validation of a dataset directory before any training starts.

`validate_dataset(dir)` reads every split's COCO JSON and checks the images, and reports each problem
with its file and record id. Fatal problems make training unsafe (`raise_if_fatal`); fixable
ones (a box partly outside its image) are clipped when the dataset is loaded and counted here.

Images are checked `all`, `sample:N` (a fixed sample of N per split) or `none`. A local image is decoded
whole (truncated files fail); an object in a bucket is checked from its first bytes (format and size from
the header, one ranged read each, many at once), which is what makes a 100k-image bucket checkable.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.checks import parse_image_check
from pipeline.data import storage
from pipeline.data.decode import DEFAULT_MAX_IMAGE_PIXELS, ImageTooLarge, check_pixels, decode_rgb, image_size
from pipeline.data.layout import SPLITS, DatasetError, annotation_path, image_file, images_dir

HEADER_BYTES = 64 * 1024  # a JPEG's size marker follows its EXIF block, which can take most of this
REMOTE_CHECKS_AT_ONCE = 32  # concurrent ranged reads against a bucket (I/O bound: threads wait on the network)

# Problem kinds. Every kind is fatal except BOX_CLIPPED and FILLED_FIELD.
MALFORMED_JSON = "malformed_json"
MISSING_SPLIT = "missing_split"
EMPTY_SPLIT = "empty_split"
MALFORMED_RECORD = "malformed_record"
DUPLICATE_ID = "duplicate_id"
MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
SIZE_MISMATCH = "size_mismatch"
UNKNOWN_IMAGE = "unknown_image_id"
UNKNOWN_CATEGORY = "unknown_category_id"
ZERO_AREA_BOX = "zero_area_box"
BOX_OUTSIDE = "box_outside_image"
BOX_CLIPPED = "box_clipped"
CATEGORY_MISMATCH = "category_mismatch"
IMAGE_TOO_LARGE = "image_too_large"  # past data.max_image_pixels, in the JSON or the file's header (never decoded)
PATH_ESCAPE = "path_outside_images"  # a file_name that resolves outside DIR/images (.., absolute, symlink out)
FILLED_FIELD = "filled_field"  # iscrowd/area absent, as many annotation tools write them: filled with the defaults


@dataclass(frozen=True)
class Problem:
    """One problem found in a dataset: what, where (file + record id), and whether it is fatal."""

    kind: str
    file: str
    record: str  # e.g. "annotation id 17", "image id 3", "line 4 column 2"
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        level = "ERROR" if self.fatal else "FIXED"
        return f"{level} [{self.kind}] {self.file}: {self.record}: {self.message}"


@dataclass
class ValidationReport:
    """All problems of a dataset directory, with per-split image and annotation counts."""

    dataset_dir: str
    problems: list[Problem] = field(default_factory=list)
    num_images: dict[str, int] = field(default_factory=dict)
    num_annotations: dict[str, int] = field(default_factory=dict)
    filled: Counter = field(default_factory=Counter)  # field -> annotations that lacked it (filled with defaults)
    images_checked: int = 0  # image files read (all, a sample, or none)
    check_seconds: float = 0.0  # wall time spent on them

    @property
    def fatal(self) -> list[Problem]:
        return [p for p in self.problems if p.fatal]

    @property
    def fixable(self) -> list[Problem]:
        return [p for p in self.problems if not p.fatal]

    @property
    def ok(self) -> bool:
        return not self.fatal

    def summary(self) -> str:
        counts = ", ".join(f"{s}: {self.num_images.get(s, 0)} images" for s in self.num_images)
        clipped = sum(p.kind == BOX_CLIPPED for p in self.problems)
        filled = "".join(f", {n} annotation(s) without {key!r} filled" for key, n in sorted(self.filled.items()) if n)
        rate = self.images_checked / self.check_seconds if self.check_seconds > 0 else 0.0
        checked = f"; {self.images_checked} image files checked ({rate:.0f}/s)" if self.images_checked else ""
        return (
            f"{self.dataset_dir}: {len(self.fatal)} fatal problem(s), "
            f"{clipped} fixable (boxes clipped to their image){filled}; {counts}{checked}"
        )

    def raise_if_fatal(self) -> None:
        """Raise `DatasetError` naming every fatal problem's file and record."""
        if self.fatal:
            lines = "\n".join(f"  {p}" for p in self.fatal)
            raise DatasetError(f"dataset {self.dataset_dir} is unsafe to train on:\n{lines}")


def validate_dataset(
    dataset_dir: storage.Location,
    splits: Sequence[str] = SPLITS,
    check_images: bool | str = True,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> ValidationReport:
    """Validate every split of a dataset directory; ``check_images`` is `all` (True), `sample:N` or `none` (False).
    An image past ``max_pixels`` is fatal, from its JSON record and from its file's header."""
    limit = parse_image_check(check_images)
    report = ValidationReport(os.fspath(dataset_dir))
    categories: dict[str, dict[int, str]] = {}
    for split in splits:
        path = annotation_path(dataset_dir, split)
        data = _load_json(path, report)
        if data is None:
            continue
        start = time.perf_counter()
        problems = validate_coco(data, str(path), images_dir(dataset_dir), limit, max_pixels)
        report.check_seconds += time.perf_counter() - start
        report.images_checked += len(data["images"]) if limit is None else min(limit, len(data["images"]))
        report.problems.extend(problems)
        report.num_images[split] = len(data["images"])
        report.num_annotations[split] = len(data["annotations"])
        report.filled.update(missing_field_counts(data["annotations"]))
        if not data["images"]:
            report.problems.append(Problem(EMPTY_SPLIT, str(path), "images", "the split has no images"))
        categories[split] = {c["id"]: c["name"] for c in data["categories"] if _is_category(c)}
    if len(set(map(lambda c: tuple(sorted(c.items())), categories.values()))) > 1:
        detail = "; ".join(f"{s}: {sorted(c.items())}" for s, c in categories.items())
        report.problems.append(
            Problem(CATEGORY_MISMATCH, str(dataset_dir), "categories", f"splits differ in categories ({detail})")
        )
    return report


def _load_json(path: storage.Location, report: ValidationReport) -> dict[str, Any] | None:
    """The parsed JSON, or None after recording why it cannot be used (a bucket that cannot be reached raises)."""
    if not storage.is_file(path):
        report.problems.append(Problem(MISSING_SPLIT, str(path), "file", "annotation file not found"))
        return None
    try:
        data = json.loads(storage.read_text(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        record = f"line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else "file"
        report.problems.append(Problem(MALFORMED_JSON, str(path), record, f"not valid JSON: {e}"))
        return None
    if not isinstance(data, dict):
        report.problems.append(Problem(MALFORMED_JSON, str(path), "top level", "expected a JSON object"))
        return None
    bad = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if bad:
        report.problems.append(Problem(MALFORMED_JSON, str(path), "top level", f"missing or non-list keys {bad}"))
        return None
    return data


def validate_coco(
    data: dict[str, Any],
    json_file: str,
    image_root: storage.Location,
    image_limit: int | None = None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> list[Problem]:
    """Problems of one parsed COCO detection dict whose images live under ``image_root``; ``image_limit`` images
    are read (None: all; a seeded sample otherwise)."""
    problems: list[Problem] = []

    def well_formed(key: str, name: str, is_valid) -> list[dict[str, Any]]:
        return [r for r in data[key] if _check_record(r, name, is_valid, json_file, problems)]

    categories = well_formed("categories", "category", _is_category)
    images = well_formed("images", "image", _is_image)
    annotations = well_formed("annotations", "annotation", _is_annotation)
    for name, records in (("category", categories), ("image", images), ("annotation", annotations)):
        for record_id, count in Counter(r["id"] for r in records).items():
            if count > 1:
                problems.append(Problem(DUPLICATE_ID, json_file, f"{name} id {record_id}", f"used {count} times"))
    problems.extend(_escaping_paths(images, json_file, image_root))
    problems.extend(_too_large(images, json_file, max_pixels))
    category_ids = {c["id"] for c in categories}
    by_id = {im["id"]: im for im in images}
    for ann in annotations:
        problems.extend(_check_annotation(ann, json_file, by_id, category_ids))
    problems.extend(_missing_field_notes(annotations, json_file))
    if image_limit is None or image_limit >= len(images):
        problems.extend(_check_image_files(images, json_file, image_root, max_pixels))
    elif image_limit > 0:
        sample = sorted(random.Random(0).sample(images, image_limit), key=lambda im: im["id"])
        problems.extend(_check_image_files(sample, json_file, image_root, max_pixels))
    return problems


def complete_annotations(annotations: list[dict[str, Any]]) -> None:
    """Fill, in place, the fields pycocotools' evaluator needs and many exporters omit: a missing `iscrowd` is 0,
    a missing `area` is the box's area (w * h)."""
    for ann in annotations:
        if "iscrowd" not in ann:
            ann["iscrowd"] = 0
        if "area" not in ann and isinstance(ann.get("bbox"), list) and len(ann["bbox"]) == 4:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])


MISSING_FIELD_DEFAULTS = {"iscrowd": "0", "area": "the box area w*h"}


def missing_field_counts(annotations: list[Any]) -> dict[str, int]:
    """Field -> how many annotations lack it (`complete_annotations` fills them when the split is loaded)."""
    return {key: sum(isinstance(a, dict) and key not in a for a in annotations) for key in MISSING_FIELD_DEFAULTS}


def _missing_field_notes(annotations: list[dict[str, Any]], json_file: str) -> list[Problem]:
    """One non-fatal note per field that some annotations lack (they are filled when the split is loaded)."""
    notes = []
    for key, missing in missing_field_counts(annotations).items():
        default = MISSING_FIELD_DEFAULTS[key]
        if missing:
            message = f"{missing} annotation(s) without {key!r}: filled with {default}"
            notes.append(Problem(FILLED_FIELD, json_file, f"{key} field", message, fatal=False))
    return notes


def _check_record(record: Any, name: str, is_valid, json_file: str, problems: list[Problem]) -> bool:
    if is_valid(record):
        return True
    rid = record.get("id", "?") if isinstance(record, dict) else "?"
    message = f"malformed {name} record: {record!r:.200}"
    problems.append(Problem(MALFORMED_RECORD, json_file, f"{name} id {rid}", message))
    return False


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_category(c: Any) -> bool:
    return isinstance(c, dict) and _is_int(c.get("id")) and isinstance(c.get("name"), str)


def _is_image(im: Any) -> bool:
    return (
        isinstance(im, dict)
        and _is_int(im.get("id"))
        and isinstance(im.get("file_name"), str)
        and all(_is_int(im.get(k)) and im[k] > 0 for k in ("width", "height"))
    )


def _is_annotation(a: Any) -> bool:
    if not (isinstance(a, dict) and all(_is_int(a.get(k)) for k in ("id", "image_id", "category_id"))):
        return False
    if "iscrowd" in a and a["iscrowd"] not in (0, 1):  # pycocotools needs 0/1 (absent is filled with 0)
        return False
    if "area" in a and not (isinstance(a["area"], int | float) and not isinstance(a["area"], bool)):
        return False
    bbox = a.get("bbox")
    return (
        isinstance(bbox, list)
        and len(bbox) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
    )


def clip_bbox(bbox: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """A COCO ``[x, y, w, h]`` box clipped to the image, as xyxy ``(x1, y1, x2, y2)``."""
    x, y, w, h = bbox
    return max(0.0, x), max(0.0, y), min(float(width), x + w), min(float(height), y + h)


def _check_annotation(
    ann: dict[str, Any], json_file: str, images: dict[int, dict[str, Any]], category_ids: set[int]
) -> list[Problem]:
    image = images.get(ann["image_id"])
    file_name = f", {image['file_name']}" if image else ""
    record = f"annotation id {ann['id']} (image id {ann['image_id']}{file_name})"
    problems = []
    if ann["category_id"] not in category_ids:
        problems.append(Problem(UNKNOWN_CATEGORY, json_file, record, f"unknown category id {ann['category_id']}"))
    if image is None:
        return problems + [Problem(UNKNOWN_IMAGE, json_file, record, f"unknown image id {ann['image_id']}")]
    x, y, w, h = ann["bbox"]
    if w <= 0 or h <= 0:
        return problems + [Problem(ZERO_AREA_BOX, json_file, record, f"box {ann['bbox']} has zero area")]
    width, height = image["width"], image["height"]
    if x >= 0 and y >= 0 and x + w <= width and y + h <= height:
        return problems
    x1, y1, x2, y2 = clip_bbox(ann["bbox"], width, height)
    where = f"box {ann['bbox']} outside the {width}x{height} image"
    if x2 > x1 and y2 > y1:
        clipped = [round(v, 2) for v in (x1, y1, x2 - x1, y2 - y1)]
        problems.append(Problem(BOX_CLIPPED, json_file, record, f"{where}; clipped to {clipped}", fatal=False))
    else:
        problems.append(Problem(BOX_OUTSIDE, json_file, record, f"{where}; nothing is left inside"))
    return problems


def _escaping_paths(images: list[dict[str, Any]], json_file: str, root: storage.Location) -> list[Problem]:
    """Image records whose file resolves outside the images folder: reading them would read any file the user can."""
    problems = []
    for im in images:
        target, inside = image_file(root, im["file_name"])
        if not inside:
            message = f"file_name {im['file_name']!r} resolves to {target}, outside {storage.absolute(root)}"
            problems.append(Problem(PATH_ESCAPE, json_file, f"image id {im['id']}", message))
    return problems


def _too_large(images: list[dict[str, Any]], json_file: str, max_pixels: int) -> list[Problem]:
    problems = []
    for im in images:
        try:
            check_pixels(im["height"], im["width"], max_pixels)
        except ImageTooLarge as e:
            problems.append(Problem(IMAGE_TOO_LARGE, json_file, f"image id {im['id']}", f"the JSON says: {e}"))
    return problems


def _check_image_files(
    images: list[dict[str, Any]], json_file: str, root: storage.Location, max_pixels: int
) -> list[Problem]:
    remote = storage.is_remote(root)

    def check(im: dict[str, Any]) -> Problem | None:
        if not image_file(root, im["file_name"])[1]:
            return None  # reported as PATH_ESCAPE; never opened
        path = storage.join(root, im["file_name"])
        record = f"image id {im['id']} ({path})"
        try:
            size = _remote_image_size(path, max_pixels) if remote else _decoded_image_size(Path(path), max_pixels)
        except (FileNotFoundError, storage.ObjectNotFound):
            return Problem(MISSING_IMAGE, json_file, record, "image file not found")
        except ImageTooLarge as e:
            return Problem(IMAGE_TOO_LARGE, json_file, record, f"the file's header says: {e}")
        except Exception as e:  # PIL raises many types for corrupt files
            return Problem(CORRUPT_IMAGE, json_file, record, f"cannot {'read' if remote else 'decode'} image: {e}")
        if size != (im["width"], im["height"]):
            message = f"image is {size[0]}x{size[1]}, JSON says {im['width']}x{im['height']}"
            return Problem(SIZE_MISMATCH, json_file, record, message)
        return None

    workers = REMOTE_CHECKS_AT_ONCE if remote else min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [p for p in pool.map(check, images) if p is not None]


def _decoded_image_size(path: Path, max_pixels: int) -> tuple[int, int]:
    """(width, height) of a local image after decoding every pixel as training will (`pipeline.data.decode`: the
    size limit from the header first): a truncated file fails here."""
    if not path.is_file():
        raise FileNotFoundError(path)
    height, width = decode_rgb(path.read_bytes(), max_pixels=max_pixels).shape[:2]
    return width, height


def _remote_image_size(location: str, max_pixels: int) -> tuple[int, int]:
    """(width, height) of an object from its header: the first bytes, or the whole object when the header is
    longer."""
    head = storage.read_head(location, HEADER_BYTES)
    try:
        height, width = image_size(head)
    except Exception:
        if len(head) < HEADER_BYTES:
            raise  # the whole object was read: it is not an image
        height, width = image_size(storage.read_bytes(location))
    check_pixels(height, width, max_pixels)
    return width, height
