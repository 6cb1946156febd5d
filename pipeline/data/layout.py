"""The dataset directory layout and the category-id <-> label map.

A dataset directory is the single format of the pipeline, on local disk or under an object-store prefix
(`s3://bucket/set`, see `pipeline.data.storage`)::

    DIR/images/...              image files (``file_name`` in the JSON is relative to DIR/images)
    DIR/annotations/train.json  COCO detection JSON
    DIR/annotations/val.json    COCO detection JSON
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data import storage
from pipeline.data.storage import DatasetError as DatasetError  # re-exported: the dataset error type
from pipeline.data.storage import Location

SPLITS: tuple[str, ...] = ("train", "val")


def images_dir(dataset_dir: Location) -> Location:
    """DIR/images: a `Path` for a local dataset, a URI string for a remote one (so are the functions below)."""
    return storage.join(dataset_dir, "images")


def annotation_path(dataset_dir: Location, split: str) -> Location:
    if split not in SPLITS:
        raise ValueError(f"split {split!r} not supported; choose one of {list(SPLITS)}")
    return storage.join(dataset_dir, "annotations", f"{split}.json")


def image_file(image_root: Location, file_name: str) -> tuple[Location, bool]:
    """`(resolved location, inside)` of an annotation's `file_name`: the one rule for a path that escapes the images
    folder (`../../etc/passwd`, an absolute path), which must never be read."""
    if storage.is_remote(image_root):  # an object key is literal: refuse any `..` part or an absolute name
        inside = not file_name.startswith("/") and ".." not in file_name.split("/")
        return storage.join(image_root, file_name), inside
    root = Path(image_root)
    target = (root / file_name).resolve()
    return target, target.is_relative_to(root.resolve())


@dataclass(frozen=True)
class LabelMap:
    """Contiguous 0-based labels for COCO category ids, in sorted category-id order.

    It travels with every checkpoint and registered model (``to_dict`` / ``from_dict``).
    """

    category_ids: tuple[int, ...]
    names: tuple[str, ...]
    _cat_to_label: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.category_ids) != len(self.names):
            raise ValueError(f"{len(self.category_ids)} category ids but {len(self.names)} names")
        if list(self.category_ids) != sorted(set(self.category_ids)):
            raise ValueError(f"category ids must be unique and sorted, got {list(self.category_ids)}")
        object.__setattr__(self, "_cat_to_label", {cat: label for label, cat in enumerate(self.category_ids)})

    @classmethod
    def from_categories(cls, categories: Sequence[dict[str, Any]]) -> LabelMap:
        """From a COCO ``categories`` list (``[{"id": int, "name": str}, ...]``)."""
        ordered = sorted(categories, key=lambda c: int(c["id"]))
        return cls(tuple(int(c["id"]) for c in ordered), tuple(str(c["name"]) for c in ordered))

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.category_ids)

    def category_id_to_label(self, category_id: int) -> int:
        try:
            return self._cat_to_label[int(category_id)]
        except KeyError:
            raise KeyError(f"unknown category id {category_id}; known: {list(self.category_ids)}") from None

    def label_to_category_id(self, label: int) -> int:
        if not 0 <= int(label) < len(self.category_ids):
            raise KeyError(f"label {label} outside [0, {len(self.category_ids)})")
        return self.category_ids[int(label)]

    def to_dict(self) -> dict[str, list]:
        return {"category_ids": list(self.category_ids), "names": list(self.names)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelMap:
        unknown = set(data) - {"category_ids", "names"}
        if unknown:
            raise ValueError(f"unknown LabelMap keys {sorted(unknown)}; valid: ['category_ids', 'names']")
        return cls(tuple(int(c) for c in data["category_ids"]), tuple(str(n) for n in data["names"]))


def load_label_map(dataset_dir: Location, split: str = "train") -> LabelMap:
    """The label map of a dataset directory, read from the categories of ``split``."""
    path = annotation_path(dataset_dir, split)
    try:
        categories = json.loads(storage.read_text(path))["categories"]
        return LabelMap.from_categories(categories)
    except storage.StorageError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{path}: cannot read categories: {e}") from e


@contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``out_dir``; rename it to ``out_dir`` only on success.

    Nothing half-written is left behind: on any exception the temporary directory is removed.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; choose another --out or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def val_indices(count: int, val_fraction: float, seed: int) -> set[int]:
    """The importers' train/val split: a seeded permutation's first ``val_fraction`` of ``count`` items, at least
    one and never all of them (where ``val_fraction > 0`` and there are two or more), the same for the same seed."""
    num_val = round(count * val_fraction)
    if val_fraction > 0 and count > 1:
        num_val = min(count - 1, max(1, num_val))
    return set(np.random.default_rng(seed).permutation(count)[:num_val].tolist())


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
