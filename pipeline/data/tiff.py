"""TIFF files (orthophotos, microscopy, scans) to uint8 RGB, through tifffile (+ imagecodecs for LZW, JPEG, ZSTD...).

PIL reads 8-bit TIFFs, but a 16-bit RGB file opens as 8-bit "RGB" with the wrong bytes, and multi-band or float
rasters not at all; orthophotos come as exactly those. The first page (the full-resolution image; overviews and
masks of a pyramidal file come after it) is read and converted by a documented rule:

- samples: 1 = grey (replicated to RGB), 2 = grey + alpha, 3 = RGB, 4 = RGB + alpha or near-infrared: the first
  three are the RGB channels, the rest is dropped. More bands (multispectral) or CMYK are refused by name.
- palette images through their colour map; MINISWHITE grey is inverted.
- uint8 stays as it is; bool is 0 / 255; every other type (uint16, 12-bit data in uint16, int16, float) is
  stretched linearly from its 0.1th to its 99.9th percentile over all bands together (colour balance kept; a
  12-bit sensor's values do not end up in the darkest 6% of the range, and a few hot pixels do not darken the
  rest), the same rule in training, evaluation and prediction.
"""

from __future__ import annotations

import io

import numpy as np

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
STRETCH_PERCENTILES = (0.1, 99.9)
_STRETCH_SAMPLE = 1_000_000  # values the percentiles are taken from (a strided sample of a large image)


class TiffError(ValueError):
    """A TIFF this pipeline cannot read as an RGB image; the message says what it holds."""


def is_tiff(data: bytes) -> bool:
    return data[:4] in TIFF_MAGICS


def tiff_size(data: bytes) -> tuple[int, int]:
    """(height, width) of the first page, from the header."""
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages.first
        return int(page.imagelength), int(page.imagewidth)


def decode_tiff(data: bytes) -> np.ndarray:
    """uint8 [h, w, 3] of the first page (module docstring); TiffError for what cannot be read, a truncated file
    included."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            array = page.asarray()
            photometric, axes, colormap = int(page.photometric), page.axes, page.colormap
    except (ValueError, KeyError, OSError, tifffile.TiffFileError) as e:
        # tifffile says "failed to read N bytes, got M" for a truncated file, names a missing codec, ...
        raise TiffError(f"unreadable TIFF: {e}") from None
    return _to_rgb8(array, photometric, axes, colormap)


def _to_rgb8(array: np.ndarray, photometric: int, axes: str, colormap: np.ndarray | None) -> np.ndarray:
    if axes.startswith("S") and array.ndim == 3:  # planar configuration: bands first
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise TiffError(f"unsupported TIFF layout: axes {axes!r}, shape {list(array.shape)}")
    if photometric == 5:  # SEPARATED
        raise TiffError("CMYK TIFF: convert it to RGB first")
    bands = array.shape[2]
    if bands > 4:
        raise TiffError(f"{bands}-band TIFF (multispectral): write the 3 bands to detect on as an RGB TIFF")
    if photometric == 3 and colormap is not None:  # PALETTE: colour map [3, 2**bits] of uint16
        return (colormap.T[array[..., 0]] >> 8).astype(np.uint8)
    grey = bands <= 2
    array = array[..., :1] if grey else array[..., :3]
    if photometric == 0:  # MINISWHITE
        array = ~array if array.dtype == bool else _invert(array)
    rgb8 = _to_uint8(array)
    return np.repeat(rgb8, 3, axis=2) if grey else np.ascontiguousarray(rgb8)


def _invert(array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.integer):
        return np.iinfo(array.dtype).max - array
    return -array  # floats: the stretch that follows maps the range back


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    sample = array.reshape(-1)[:: max(1, array.size // _STRETCH_SAMPLE)].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return np.zeros(array.shape, np.uint8)
    low, high = np.percentile(sample, STRETCH_PERCENTILES)
    scaled = (np.nan_to_num(array.astype(np.float32), nan=low) - low) * (255.0 / max(high - low, 1e-12))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)
