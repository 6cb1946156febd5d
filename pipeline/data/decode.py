"""Image files to uint8 RGB arrays, as fast as the format allows.

JPEG goes through simplejpeg (libjpeg-turbo, bundled in its PyPI wheels): 1.2x PIL's rate at 512 px and 1.7x at
1024 px on one core (`benchmarks/bench_data.py --decoders`). When the model needs fewer pixels than the file
holds (a 12-megapixel photo for a 512 px input), libjpeg-turbo decodes at 1/2, 1/4 or 1/8 of the size in the DCT
domain, never below what the transform needs: several times faster, and a box filter rather than the aliasing of a
large bilinear downscale. TIFF goes through tifffile (16-bit and multi-band orthophotos: `pipeline.data.tiff`);
other formats (PNG, BMP, WebP) and JPEGs libjpeg-turbo refuses (CMYK) go through PIL at full size.

Every decode reads the size from the header first and refuses an image past `max_pixels` (default
DEFAULT_MAX_IMAGE_PIXELS; `data.max_image_pixels`, `predict --max-image-pixels`) before a pixel is decoded: a
decompression bomb (a small file declaring a huge image) costs nothing. PIL's own bomb check, a fixed 179
megapixels that a large orthophoto passes, is therefore turned off here.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pipeline.config.data import DEFAULT_MAX_IMAGE_PIXELS
from pipeline.data.tiff import decode_tiff, is_tiff, tiff_size

try:
    import simplejpeg
except ImportError:  # a dependency, but a platform without its wheel still trains: PIL decodes everything
    simplejpeg = None

JPEG_MAGIC = b"\xff\xd8"
Image.MAX_IMAGE_PIXELS = None  # see the module docstring: `check_pixels` runs before every decode instead


class ImageTooLarge(ValueError):
    """An image past the pixel limit (or a decompression bomb declaring such a size)."""


def check_pixels(height: int, width: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    if height * width > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {height * width / 1e6:.0f} megapixels, past the limit of "
            f"{max_pixels / 1e6:.0f} megapixels (a decompression bomb, or raise data.max_image_pixels / "
            "--max-image-pixels)"
        )


def decoder_name() -> str:
    return "simplejpeg (libjpeg-turbo)" if simplejpeg is not None else "PIL"


def image_size(data: bytes) -> tuple[int, int]:
    """(height, width) of an encoded image, from its header only."""
    if is_tiff(data):
        return tiff_size(data)
    if simplejpeg is not None and data[:2] == JPEG_MAGIC:
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            return height, width
        except ValueError:
            pass  # a JPEG libjpeg-turbo cannot parse: PIL may
    with Image.open(io.BytesIO(data)) as f:
        return f.height, f.width


def decode_rgb(
    data: bytes, min_size: tuple[int, int] | None = None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> np.ndarray:
    """uint8 [h, w, 3] of an encoded image. With `min_size` (min_h, min_w), a JPEG may come back smaller than the
    file, by a power of two, but at least that large on both sides; anything else comes back at full size.
    ImageTooLarge past `max_pixels`, before decoding."""
    check_pixels(*image_size(data), max_pixels)
    if is_tiff(data):
        return decode_tiff(data)
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
