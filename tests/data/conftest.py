"""Fixtures for the data and evaluation tests: tiny COCO dataset directories written to tmp_path."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

CATEGORIES = [{"id": 3, "name": "dog"}, {"id": 1, "name": "cat"}, {"id": 7, "name": "bird"}]  # unsorted on purpose


def base_split(first_image_id: int, num_images: int, first_ann_id: int) -> dict[str, Any]:
    """A valid COCO dict: images of varied sizes (incl. one without boxes), 2 boxes per other image."""
    images, annotations = [], []
    ann_id = first_ann_id
    for k in range(num_images):
        image_id = first_image_id + k
        width, height = 64 + 16 * (k % 3), 48 + 8 * (k % 2)
        images.append({"id": image_id, "file_name": f"img_{image_id}.png", "width": width, "height": height})
        if k == num_images - 1:
            continue  # an image without boxes
        for j, (x, y, w, h) in enumerate([(2, 3, 20, 15), (30.5, 10, 25.5, 30)]):
            category = CATEGORIES[(k + j) % 3]["id"]
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            ann_id += 1
    return {"images": images, "annotations": annotations, "categories": copy.deepcopy(CATEGORIES)}


def write_dataset(root: Path, train: dict[str, Any], val: dict[str, Any], write_images: bool = True) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, split in (("train", train), ("val", val)):
        (root / "annotations" / f"{name}.json").write_text(json.dumps(split))
        for image in split["images"] if write_images else []:
            size = [image[k] if isinstance(image[k], int) and image[k] > 0 else 32 for k in ("height", "width")]
            pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / image["file_name"])
    return root


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """``make(mutate=None, name="ds")``: write a valid dataset dir; ``mutate(train, val)`` edits the
    dicts first (to plant errors)."""

    def make(mutate: Callable[[dict, dict], None] | None = None, name: str = "ds") -> Path:
        train, val = base_split(1, 5, 1), base_split(101, 4, 1001)
        if mutate is not None:
            mutate(train, val)
        return write_dataset(tmp_path / name, train, val)

    return make
