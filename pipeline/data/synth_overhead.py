"""The `overhead` synthetic preset: a scene seen from straight above, like an orthophoto or a drone survey.

It stands in for real overhead imagery, which neither `shapes` nor `dense` resembles: a terrain texture with
fields, roads and parking lots; many small, near-identical vehicles in rows at any heading (cars 7-14 px at
512 px, trucks a little longer, so the two classes differ by size and proportion only); round tree crowns in
clumps; larger buildings. Every object casts a shadow in the image's sun direction (not part of its box), and
shrubs like small crowns are clutter. Sizes do not depend on the position in the image and there is no up:
what `data.view: auto` should judge as overhead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw

OVERHEAD_CLASSES: tuple[str, ...] = ("car", "truck", "tree", "building")
# object length relative to the image side (width = length x the aspect below)
_LENGTH = {
    "car": (7 / 512, 14 / 512),
    "truck": (15 / 512, 26 / 512),
    "tree": (8 / 512, 24 / 512),
    "building": (24 / 512, 64 / 512),
}
_ASPECT = {"car": (0.45, 0.6), "truck": (0.35, 0.45), "tree": (0.85, 1.15), "building": (0.5, 1.0)}
_HEIGHT = {"car": 0.25, "truck": 0.35, "tree": 0.5, "building": 0.4}  # object height relative to its length


def render_overhead_image(
    rng: np.random.Generator, size: int
) -> tuple[Image.Image, list[tuple[int, list[float]]], Any]:
    """One image, its objects [(class index, PIL geometry)] in drawing order and its drawing function."""
    image = Image.fromarray(_terrain(rng, size))
    draw = ImageDraw.Draw(image)
    sun = rng.uniform(0, 2 * np.pi)  # shadows fall the same way across the image
    shadow = np.array([np.cos(sun), np.sin(sun)])
    lots = _roads_and_lots(draw, rng, size)
    objects: list[tuple[int, list[float]]] = []
    for _ in range(int(rng.integers(15, 40))):  # shrubs: crown-like clutter, too small to annotate
        x, y = rng.uniform(0, size, 2)
        r = rng.uniform(1.5, 3.0) * size / 512
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_jitter(rng, (55, 85, 45), 15))
    for _ in range(int(rng.integers(2, 9))):
        objects.append(_place(draw, rng, size, "building", rng.uniform(0.05, 0.95, 2) * size, shadow))
    for _ in range(int(rng.integers(2, 6))):  # tree clumps
        centre = rng.uniform(0.05, 0.95, 2) * size
        for _ in range(int(rng.integers(3, 12))):
            objects.append(_place(draw, rng, size, "tree", centre + rng.normal(0, 0.05 * size, 2), shadow))
    for (x0, y0, x1, y1), heading in lots:  # vehicles parked in rows along each lot's heading
        for _ in range(int(rng.integers(6, 22))):
            name = "truck" if rng.random() < 0.15 else "car"
            centre = np.array([rng.uniform(x0, x1), rng.uniform(y0, y1)])
            objects.append(_place(draw, rng, size, name, centre, shadow, heading + rng.choice([0.0, np.pi])))
    return image, objects, draw_overhead


def draw_overhead(draw: ImageDraw.ImageDraw, cls: int, geometry: list[float], fill: Any) -> None:
    """Tree crowns from their box, everything else as its rotated polygon."""
    if OVERHEAD_CLASSES[cls] == "tree":
        draw.ellipse(geometry, fill=fill)
    else:
        draw.polygon(geometry, fill=fill)


def _place(draw, rng, size, name, centre, shadow, heading=None) -> tuple[int, list[float]]:
    """Draw one object with its shadow at `centre`; its class index and geometry."""
    cls = OVERHEAD_CLASSES.index(name)
    length = float(np.exp(rng.uniform(*np.log(np.array(_LENGTH[name]) * size))))
    width = length * rng.uniform(*_ASPECT[name])
    heading = rng.uniform(0, np.pi) if heading is None else heading + rng.normal(0, 0.08)
    cx, cy = np.clip(centre, 0, size)
    height = _HEIGHT[name] * length  # how far its shadow falls
    if name == "tree":
        half = length / 2
        geometry = [cx - half, cy - half * width / length, cx + half, cy + half * width / length]
        dx, dy = shadow * height
        draw.ellipse([v + (dx if i % 2 == 0 else dy) for i, v in enumerate(geometry)], fill=(40, 45, 35))
        draw.ellipse(geometry, fill=_jitter(rng, (45, 100, 40), 20))
        return cls, geometry
    geometry = _rotated_rectangle(cx, cy, length, width, heading)
    draw.polygon([v + shadow[i % 2] * height for i, v in enumerate(geometry)], fill=(35, 38, 40))
    colour = _vehicle_colour(rng) if name in ("car", "truck") else _jitter(rng, (150, 120, 110), 40)
    draw.polygon(geometry, fill=colour)
    if name in ("car", "truck"):  # a windscreen: the darker front third, which tells the heading
        front = _rotated_rectangle(
            cx + np.cos(heading) * length * 0.2, cy + np.sin(heading) * length * 0.2, length * 0.2, width * 0.8, heading
        )
        draw.polygon(front, fill=tuple(int(c * 0.45) for c in colour))
    return cls, geometry


def _rotated_rectangle(cx: float, cy: float, length: float, width: float, heading: float) -> list[float]:
    """The 4 corners (flattened x, y) of a `length` x `width` rectangle whose long side points along `heading`."""
    along, across = np.array([np.cos(heading), np.sin(heading)]), np.array([-np.sin(heading), np.cos(heading)])
    corners = [(a * length / 2) * along + (b * width / 2) * across for a, b in ((1, 1), (1, -1), (-1, -1), (-1, 1))]
    return [float(v) for corner in corners for v in (cx + corner[0], cy + corner[1])]


def _roads_and_lots(draw, rng, size) -> list[tuple[tuple[float, float, float, float], float]]:
    """Grey roads across the image and paved lots beside them; the lots' extents and headings."""
    lots = []
    for _ in range(int(rng.integers(1, 4))):
        heading = rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.05)
        x, y = rng.uniform(0.1, 0.9, 2) * size
        d = np.array([np.cos(heading), np.sin(heading)]) * size * 1.5
        draw.line(
            [x - d[0], y - d[1], x + d[0], y + d[1]], fill=_jitter(rng, (105, 105, 100), 10), width=int(size / 40)
        )
        w, h = rng.uniform(0.12, 0.3, 2) * size
        x0, y0 = np.clip([x - w / 2, y - h / 2], 0, size - 8)
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=_jitter(rng, (125, 125, 120), 12))
        lots.append(((x0, y0, min(size, x0 + w), min(size, y0 + h)), heading))
    return lots


def _terrain(rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: fields of earth and grass tints, low-frequency variation and grain."""
    tints = np.array([(95, 120, 60), (120, 110, 80), (80, 105, 55), (140, 130, 95)], dtype=np.float32)
    fields = tints[rng.integers(len(tints), size=(5, 5))]
    base = np.asarray(Image.fromarray(fields.astype(np.uint8)).resize((size, size), Image.NEAREST), np.float32)
    coarse = rng.normal(0, 12, (8, 8, 3)).astype(np.float32)
    waves = np.stack(
        [np.asarray(Image.fromarray(coarse[..., c]).resize((size, size), Image.BILINEAR)) for c in range(3)], -1
    )
    grain = rng.normal(0, 8, (size, size, 1)).astype(np.float32)
    return np.clip(base + waves + grain, 0, 255).astype(np.uint8)


def _vehicle_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """Vehicles come in few colours: white, black, greys, and now and then a saturated one."""
    palette = [(230, 230, 228), (30, 30, 34), (150, 150, 155), (190, 190, 195), (160, 30, 30), (35, 60, 140)]
    weights = np.array([0.3, 0.2, 0.2, 0.15, 0.08, 0.07])
    return _jitter(rng, palette[int(rng.choice(len(palette), p=weights))], 12)


def _jitter(rng: np.random.Generator, colour, spread: float) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.array(colour) + rng.uniform(-spread, spread, 3), 0, 255))
