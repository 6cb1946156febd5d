"""The `dense` synthetic preset: many small, overlapping objects of several classes over a textured background.

It stands in for the hard cases of real data (aerial, retail shelves, cells): 15-60 objects per image, 8-40 px
at 384 px, classes told apart by shape first (each class has a colour tendency, but the colour ranges overlap),
occlusion, and a background with blobs, lines and speckles at the objects' own scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw

DENSE_CLASSES: tuple[str, ...] = ("disc", "square", "triangle", "diamond", "cross")
# each class leans towards one hue; the jitter below lets neighbouring classes share colours
_HUES = np.array([0.0, 0.33, 0.62, 0.13, 0.8])
MIN_EXTENT, MAX_EXTENT = 8 / 384, 40 / 384  # object side relative to the image side


def render_dense_image(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[tuple[int, list[float]]], Any]:
    """One image, its shapes [(class index, PIL geometry)] in drawing order and its drawing function.

    The caller turns the shapes into tight visible-part boxes (`synth._annotations`).
    """
    image = Image.fromarray(_texture(rng, size))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(20, 50))):  # clutter at the objects' scale
        _clutter(draw, rng, size)
    shapes = []
    num_objects = int(rng.integers(15, 61))
    # objects gather in a few clusters, as cars in car parks or cells in colonies do: dense, overlapping
    centres = rng.uniform(0.1, 0.9, (int(rng.integers(2, 6)), 2)) * size
    for _ in range(num_objects):
        cls = int(rng.integers(len(DENSE_CLASSES)))
        extent = float(np.exp(rng.uniform(np.log(MIN_EXTENT * size), np.log(MAX_EXTENT * size))))
        if rng.random() < 0.7:
            cx, cy = centres[rng.integers(len(centres))] + rng.normal(0, 0.08 * size, 2)
        else:
            cx, cy = rng.uniform(0, size, 2)
        geometry = dense_shape(cls, float(cx), float(cy), extent, rng)
        draw_dense_shape(draw, cls, geometry, _colour(rng, cls))
        shapes.append((cls, geometry))
    return image, shapes, draw_dense_shape


def dense_shape(cls: int, cx: float, cy: float, extent: float, rng: np.random.Generator) -> list[float]:
    """PIL geometry: an ellipse/rectangle box, or polygon vertices (flattened), rotated at random."""
    name = DENSE_CLASSES[cls]
    half = extent / 2
    if name in ("disc", "square"):
        aspect = rng.uniform(0.8, 1.25)
        return [cx - half * aspect, cy - half / aspect, cx + half * aspect, cy + half / aspect]
    angle = rng.uniform(0, 2 * np.pi)
    if name == "triangle":
        radii = [half] * 3
    elif name == "diamond":
        radii = [half, half * 0.55] * 2
    else:  # cross: 12 vertices, arms a third of the extent wide
        arm = half / 3
        corners = [(arm, half), (arm, arm), (half, arm)]
        points = []
        for quarter in range(4):
            for x, y in corners:
                a = angle + quarter * np.pi / 2
                points += [cx + x * np.cos(a) - y * np.sin(a), cy + x * np.sin(a) + y * np.cos(a)]
        return points
    step = 2 * np.pi / len(radii)
    return [
        v for k, r in enumerate(radii) for v in (cx + r * np.cos(angle + k * step), cy + r * np.sin(angle + k * step))
    ]


def draw_geometry(draw: ImageDraw.ImageDraw, name: str, geometry: list[float], fill: Any) -> None:
    """Draw a shape of either preset: round ones from their box, squares as rectangles, the rest as polygons."""
    if name in ("circle", "disc"):
        draw.ellipse(geometry, fill=fill)
    elif name == "square":
        draw.rectangle(geometry, fill=fill)
    else:
        draw.polygon(geometry, fill=fill)


def draw_dense_shape(draw: ImageDraw.ImageDraw, cls: int, geometry: list[float], fill: Any) -> None:
    draw_geometry(draw, DENSE_CLASSES[cls], geometry, fill)


def _colour(rng: np.random.Generator, cls: int) -> tuple[int, int, int]:
    """A saturated colour near the class's hue, often drifting into a neighbour's."""
    hue = (_HUES[cls] + rng.normal(0, 0.09)) % 1.0
    value = rng.uniform(0.55, 1.0)
    saturation = rng.uniform(0.55, 1.0)
    return _hsv_to_rgb(hue, saturation, value)


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: low-frequency colour noise (bilinear-upsampled) plus pixel noise."""
    coarse = rng.uniform(60, 190, (6, 6, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR), dtype=np.float32)
    fine = rng.uniform(-25, 25, (size // 8, size // 8, 1)).astype(np.float32)
    fine = np.asarray(Image.fromarray(fine[..., 0]).resize((size, size), Image.BILINEAR))[..., None]
    noise = rng.normal(0, 10, (size, size, 3)).astype(np.float32)
    return np.clip(smooth + fine + noise, 0, 255).astype(np.uint8)


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """A muted blob, line or speckle at the objects' scale: things a detector must learn to ignore."""
    x, y = rng.uniform(0, size, 2)
    extent = rng.uniform(MIN_EXTENT, 2 * MAX_EXTENT) * size
    grey = rng.uniform(50, 210)
    fill = tuple(int(v) for v in np.clip(grey + rng.uniform(-20, 20, 3), 0, 255))
    kind = rng.random()
    if kind < 0.5:
        draw.ellipse([x - extent / 2, y - extent / 3, x + extent / 2, y + extent / 3], fill=fill)
    elif kind < 0.8:
        dx, dy = rng.uniform(-2, 2, 2) * extent
        draw.line([x, y, x + dx, y + dy], fill=fill, width=int(rng.integers(1, 4)))
    else:
        draw.rectangle([x, y, x + extent / 4, y + extent / 4], fill=fill)
