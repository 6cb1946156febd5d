"""Deterministic synthetic datasets, in three presets.

`shapes` (the demo): three classes (red circles, green squares, blue triangles) at scales from tiny to large,
with overlaps (boxes are tight around the visible part; mostly hidden objects are left out), distractor blobs
and lines in muted colours. Learnable on a 2-core CPU within minutes.
`dense` (`pipeline.data.synth_dense`): many small overlapping objects of five classes on a textured background,
for developing and testing small-object detection.
`overhead` (`pipeline.data.synth_overhead`): a scene seen from above (vehicles in rows at any heading, tree crowns,
buildings, shadows on a terrain texture), like an orthophoto.
`aerial`: large images (2,560 px by default) made of `overhead` scenes at their own scale, hundreds of 7-64 px
objects each: what training by tiles (`data.tiling`) is for.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from pipeline.data.layout import annotation_path, atomic_output_dir, images_dir, write_json
from pipeline.data.synth_dense import DENSE_CLASSES, draw_geometry, render_dense_image
from pipeline.data.synth_overhead import OVERHEAD_CLASSES, render_overhead_image

CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
CLASS_COLORS: tuple[tuple[int, int, int], ...] = ((220, 40, 40), (40, 200, 60), (50, 80, 230))
MIN_VISIBLE = 0.35  # objects with less than this fraction of their pixels visible are not annotated


@dataclass(frozen=True)
class Preset:
    """A kind of synthetic image: its classes, and a renderer (rng, size) -> (image, [(class, geometry)], draw)."""

    classes: tuple[str, ...]
    render: Callable[[np.random.Generator, int], tuple[Image.Image, list[tuple[int, list[float]]], Callable]]
    default_size: int
    supercategory: str


def _render_shapes(rng: np.random.Generator, size: int):
    image = Image.fromarray(_background(rng, size))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(3, 9)):  # distractors: muted blobs and lines
        _draw_distractor(draw, rng, size)
    shapes = []
    for _ in range(rng.integers(1, 7)):
        cls = int(rng.integers(len(CLASSES)))
        extent = float(np.exp(rng.uniform(np.log(14), np.log(0.55 * size))))  # log-uniform: many small
        cx, cy = rng.uniform(0, size, 2)
        color = tuple(int(c) for c in np.clip(np.array(CLASS_COLORS[cls]) + rng.integers(-30, 31, 3), 0, 255))
        geometry = _shape(cls, cx, cy, extent, rng)
        _draw_shape(draw, cls, geometry, color)
        shapes.append((cls, geometry))
    return image, shapes, _draw_shape


PRESETS: dict[str, Preset] = {
    "shapes": Preset(CLASSES, _render_shapes, 256, "shape"),
    "dense": Preset(DENSE_CLASSES, render_dense_image, 384, "dense"),
    "overhead": Preset(OVERHEAD_CLASSES, render_overhead_image, 512, "overhead"),
    # large orthophoto-like images: mosaics of `overhead` scenes at their 512 px scale (render_aerial_image)
    "aerial": Preset(OVERHEAD_CLASSES, render_overhead_image, 2560, "overhead"),
}
AERIAL_PATCH = 512  # px: the aerial preset's objects keep the overhead preset's sizes at 512 px (cars 7-14 px)


def write_synthetic_dataset(
    out_dir: str | os.PathLike,
    num_images: int = 400,
    size: int = 256,
    seed: int = 0,
    val_fraction: float = 0.2,
    overwrite: bool = False,
    preset: str = "shapes",
) -> Path:
    """Write a dataset directory of ``num_images`` ``size``x``size`` JPEGs of a preset (`PRESETS`); the same seed
    gives the same files. The last ``round(num_images * val_fraction)`` images form the val split."""
    if num_images < 2 or size < 32 or not 0 < val_fraction < 1:
        raise ValueError(
            f"need num_images >= 2, size >= 32, 0 < val_fraction < 1; got {num_images}, {size}, {val_fraction}"
        )
    if preset not in PRESETS:
        raise ValueError(f"synthetic preset {preset!r} not supported; choose one of {list(PRESETS)}")
    num_val = min(num_images - 1, max(1, round(num_images * val_fraction)))
    kind = PRESETS[preset]
    categories = [
        {"id": i + 1, "name": name, "supercategory": kind.supercategory} for i, name in enumerate(kind.classes)
    ]
    splits: dict[str, dict[str, list]] = {s: {"images": [], "annotations": []} for s in ("train", "val")}
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        images_dir(tmp).mkdir(parents=True)
        ann_id = 1
        for index in range(num_images):
            image, objects = render_image(np.random.default_rng([seed, index]), size, preset)
            file_name = f"{index:05d}.jpg"
            image.save(images_dir(tmp) / file_name, quality=92)
            split = splits["train" if index < num_images - num_val else "val"]
            split["images"].append({"id": index + 1, "file_name": file_name, "width": size, "height": size})
            for obj in objects:
                split["annotations"].append({"id": ann_id, "image_id": index + 1, "iscrowd": 0, **obj})
                ann_id += 1
        for name, split in splits.items():
            write_json(annotation_path(tmp, name), {**split, "categories": categories})
    return Path(out_dir)


def ensure_synthetic_dataset(out_dir: str | os.PathLike, **kwargs: Any) -> Path:
    """The demo dataset at ``out_dir``, written first if it is not there yet."""
    if annotation_path(out_dir, "train").is_file() and annotation_path(out_dir, "val").is_file():
        return Path(out_dir)
    return write_synthetic_dataset(out_dir, **kwargs)


def render_image(
    rng: np.random.Generator, size: int, preset: str = "shapes"
) -> tuple[Image.Image, list[dict[str, Any]]]:
    """One image and its COCO annotations (without ids): ``category_id``, ``bbox``, ``area``."""
    if preset == "aerial":
        return render_aerial_image(rng, size)
    image, shapes, draw = PRESETS[preset].render(rng, size)
    instance_mask = Image.new("L", (size, size), 0)  # pixel value = 1 + object index (drawn in the same order)
    mask_draw = ImageDraw.Draw(instance_mask)
    for index, (cls, geometry) in enumerate(shapes):
        draw(mask_draw, cls, geometry, index + 1)
    return image, _annotations(np.asarray(instance_mask), shapes, size, draw)


def render_aerial_image(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[dict[str, Any]]]:
    """A large overhead image: a grid of AERIAL_PATCH px `overhead` scenes (cut at the far edges), each annotated
    on its own, so objects are 7-64 px whatever ``size`` (hundreds per image from 2,000 px up)."""
    canvas = Image.new("RGB", (size, size))
    annotations: list[dict[str, Any]] = []
    for y in range(0, size, AERIAL_PATCH):
        for x in range(0, size, AERIAL_PATCH):
            patch, objects = render_image(rng, AERIAL_PATCH, "overhead")
            canvas.paste(patch, (x, y))
            for obj in objects:
                bx, by, bw, bh = obj["bbox"]
                bw, bh = min(bx + bw, size - x) - bx, min(by + bh, size - y) - by  # cut at the image's edge
                if bw >= 2 and bh >= 2 and bw * bh >= 0.5 * obj["bbox"][2] * obj["bbox"][3]:
                    annotations.append({**obj, "bbox": [bx + x, by + y, bw, bh], "area": float(bw * bh)})
    return canvas, annotations


def _annotations(mask: np.ndarray, shapes: list, size: int, draw: Callable) -> list[dict[str, Any]]:
    """Tight boxes around each object's visible pixels; mostly hidden objects are skipped."""
    annotations = []
    for index, (cls, geometry) in enumerate(shapes):
        full = Image.new("L", (size, size), 0)
        draw(ImageDraw.Draw(full), cls, geometry, 1)
        full_area = int(np.count_nonzero(np.asarray(full)))
        ys, xs = np.nonzero(mask == index + 1)
        if full_area == 0 or len(xs) < max(4, MIN_VISIBLE * full_area):
            continue
        x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        annotations.append(
            {"category_id": cls + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(len(xs)), "segmentation": []}
        )
    return annotations


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: a muted base colour, a random gradient and pixel noise."""
    base = rng.uniform(70, 190, 3)
    gradient = np.linspace(-1, 1, size, dtype=np.float32)
    direction = rng.uniform(-40, 40, 2)
    shade = direction[0] * gradient[None, :, None] + direction[1] * gradient[:, None, None]  # [S, S, 1]
    noise = rng.normal(0, 14, (size, size, 3)).astype(np.float32)
    return np.clip(base.astype(np.float32) + shade + noise, 0, 255).astype(np.uint8)


def _muted(rng: np.random.Generator) -> tuple[int, int, int]:
    gray = rng.uniform(40, 220)
    return tuple(int(v) for v in np.clip(gray + rng.uniform(-25, 25, 3), 0, 255))


def _draw_distractor(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    x, y = rng.uniform(0, size, 2)
    w, h = rng.uniform(0.03, 0.3, 2) * size
    if rng.random() < 0.6:
        draw.ellipse([x - w / 2, y - h / 2, x + w / 2, y + h / 2], fill=_muted(rng))
    else:
        draw.line([x, y, x + rng.uniform(-w, w) * 2, y + rng.uniform(-h, h) * 2], fill=_muted(rng), width=3)


def _shape(cls: int, cx: float, cy: float, extent: float, rng: np.random.Generator) -> list[float]:
    """Geometry for PIL: a bounding box (circle, square) or triangle vertices, flattened."""
    if CLASSES[cls] == "triangle":
        angle = rng.uniform(0, 2 * np.pi)
        corners = [angle + k * 2 * np.pi / 3 for k in range(3)]
        return [v for a in corners for v in (cx + extent / 2 * np.cos(a), cy + extent / 2 * np.sin(a))]
    aspect = rng.uniform(0.8, 1.25)
    w, h = extent * aspect / 2, extent / aspect / 2
    return [cx - w, cy - h, cx + w, cy + h]


def _draw_shape(draw: ImageDraw.ImageDraw, cls: int, geometry: list[float], fill: Any) -> None:
    draw_geometry(draw, CLASSES[cls], geometry, fill)
