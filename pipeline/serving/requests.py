"""What a `POST /predict` request may carry, checked before any model work: the image (raw body or a multipart
field), its size, and the query parameters. Every refusal is a `RequestRefused` with the HTTP status and a message
naming the value at fault; nothing here imports Ray, so it is tested without a server."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pipeline.data.decode import ImageTooLarge, decode_rgb

PARAMETERS = ("score_threshold", "max_detections")
DEFAULT_SCORE_THRESHOLD = 0.3  # `predict`'s default
MAX_DETECTIONS_CAP = 100_000  # a sliced image's merged detections may exceed one pass's cap
# multipart fields holding the image: the first present is read (curl -F image=@file.jpg)
IMAGE_FIELDS = ("image", "file")


class RequestRefused(ValueError):
    """A request answered with a 4xx status: `status` and a message that says what to send instead."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class PredictParams:
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    max_detections: int | None = None  # None: every detection the model keeps (its post-processing's cap)


def parse_params(query: Mapping[str, str], max_detections_cap: int = MAX_DETECTIONS_CAP) -> PredictParams:
    """Query parameters -> PredictParams; an unknown name or a bad value is a 422 naming it."""
    unknown = sorted(set(query) - set(PARAMETERS))
    if unknown:
        raise RequestRefused(422, f"unknown parameter(s) {unknown}; accepted: {list(PARAMETERS)}")
    threshold = DEFAULT_SCORE_THRESHOLD
    if "score_threshold" in query:
        threshold = _number(query["score_threshold"], "score_threshold")
        if not 0.0 <= threshold <= 1.0:
            raise RequestRefused(422, f"score_threshold must be in [0, 1], got {query['score_threshold']!r}")
    limit = None
    if "max_detections" in query:
        raw = query["max_detections"]
        if not raw.isdigit() or not 1 <= int(raw) <= max_detections_cap:
            raise RequestRefused(422, f"max_detections must be an integer in [1, {max_detections_cap}], got {raw!r}")
        limit = int(raw)
    return PredictParams(threshold, limit)


def _number(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise RequestRefused(422, f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise RequestRefused(422, f"{name} must be a finite number, got {raw!r}")
    return value


def check_body_size(declared: str | None, max_bytes: int) -> None:
    """A Content-Length past the limit is refused (413) before the body is read."""
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestRefused(413, f"request body of {int(declared):,} bytes is past the limit of {max_bytes:,}")


def image_bytes(body: bytes, max_bytes: int) -> bytes:
    """The encoded image of a raw-body request (its Content-Type is not trusted: the bytes are decoded)."""
    if not body:
        raise RequestRefused(
            400, "empty body: send the image file as the request body, or as the multipart field 'image'"
        )
    if len(body) > max_bytes:
        raise RequestRefused(413, f"image of {len(body):,} bytes is past the limit of {max_bytes:,}")
    return body


def form_image(fields: Mapping[str, object]) -> bytes | None:
    """The uploaded file's bytes of a multipart form's `image` (or `file`) field; None when neither is there."""
    for name in IMAGE_FIELDS:
        if name in fields:
            return fields[name]  # type: ignore[return-value]
    return None


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    """Encoded bytes -> uint8 [h, w, 3] RGB: 413 for an image (or a decompression bomb) past `max_pixels`, read
    from its header before any pixel is decoded; 415 for bytes that are no image format we read."""
    try:
        return decode_rgb(data, max_pixels=max_pixels)
    except ImageTooLarge as e:
        raise RequestRefused(413, f"image refused: {e}") from None
    except Exception as e:  # PIL, tifffile and imagecodecs raise many types for undecodable data
        kind = type(e).__name__
        detail = "not an image format we read (JPEG, PNG, TIFF, BMP, WebP)" if kind == "UnidentifiedImageError" else e
        raise RequestRefused(415, f"cannot decode the {len(data):,} bytes sent: {detail}") from None
