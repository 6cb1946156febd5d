"""Image files to uint8 RGB arrays, as fast as the format allows.

JPEG goes through simplejpeg (libjpeg-turbo, bundled in its PyPI wheels): 1.2x PIL's rate at 512 px and 1.7x at
1024 px on one core (`benchmarks/bench_data.py --decoders`). When the model needs fewer pixels than the file
holds (a 12-megapixel photo for a 512 px input), libjpeg-turbo decodes at 1/2, 1/4 or 1/8 of the size in the DCT
domain, never below what the transform needs: several times faster, and a box filter rather than the aliasing of a
large bilinear downscale. Other formats (PNG, BMP, TIFF, WebP) and JPEGs libjpeg-turbo refuses (CMYK) go through
PIL at full size.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

try:
    import simplejpeg
except ImportError:  # a dependency, but a platform without its wheel still trains: PIL decodes everything
    simplejpeg = None

JPEG_MAGIC = b"\xff\xd8"


def decoder_name() -> str:
    return "simplejpeg (libjpeg-turbo)" if simplejpeg is not None else "PIL"


def image_size(data: bytes) -> tuple[int, int]:
    """(height, width) of an encoded image, from its header only."""
    if simplejpeg is not None and data[:2] == JPEG_MAGIC:
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            return height, width
        except ValueError:
            pass  # a JPEG libjpeg-turbo cannot parse: PIL may
    with Image.open(io.BytesIO(data)) as f:
        return f.height, f.width


def decode_rgb(data: bytes, min_size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [h, w, 3] of an encoded image. With `min_size` (min_h, min_w), a JPEG may come back smaller than the
    file, by a power of two, but at least that large on both sides; anything else comes back at full size."""
    if simplejpeg is not None and data[:2] == JPEG_MAGIC:
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            # only 1/2, 1/4, 1/8: libjpeg-turbo's other factors (5/8, 3/4...) decode slower than full size
            shrink = next((k for k in (8, 4, 2) if min_size and _fits(height, width, k, min_size)), 1)
            min_h, min_w = (-(-height // shrink), -(-width // shrink)) if shrink > 1 else (0, 0)
            return simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=min_h, min_width=min_w)
        except ValueError:
            pass  # e.g. CMYK or a damaged stream PIL still reads
    with Image.open(io.BytesIO(data)) as f:
        return np.asarray(f.convert("RGB"))


def _fits(height: int, width: int, shrink: int, min_size: tuple[int, int]) -> bool:
    return -(-height // shrink) >= min_size[0] and -(-width // shrink) >= min_size[1]
