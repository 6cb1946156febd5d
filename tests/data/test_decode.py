"""Large JPEGs are decoded at a reduced size in the DCT domain, and the targets still land where the boxes are."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data import DatasetError, DetectionDataset, DetectionTransform
from pipeline.data.decode import decode_rgb, image_size

HEIGHT, WIDTH = 1200, 1600
BOXES = [[200.0, 300.0, 600.0, 700.0], [1000.0, 100.0, 1500.0, 1100.0]]  # xyxy original px


def _photo(seed: int = 0) -> np.ndarray:
    """Smooth gradients with two bright rectangles at BOXES: JPEG-friendly, and where the boxes are is visible."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    image = np.stack([x * 200 // WIDTH, y * 200 // HEIGHT, np.full_like(x, 60)], -1).astype(np.uint8)
    for x0, y0, x1, y1 in BOXES:
        image[int(y0) : int(y1), int(x0) : int(x1)] = 250
    return image


def _dataset(root: Path, extension: str) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    Image.fromarray(_photo()).save(root / "images" / f"photo.{extension}", quality=92)
    annotations = [
        {"id": k + 1, "image_id": 1, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "area": 1.0, "iscrowd": 0}
        for k, (x0, y0, x1, y1) in enumerate(BOXES)
    ]
    split = {
        "images": [{"id": 1, "file_name": f"photo.{extension}", "width": WIDTH, "height": HEIGHT}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "box"}],
    }
    for name in ("train", "val"):
        (root / "annotations" / f"{name}.json").write_text(json.dumps(split))
    return root


def test_a_jpeg_decodes_at_the_smallest_power_of_two_the_model_still_resolves():
    buffer = io.BytesIO()
    Image.fromarray(_photo()).save(buffer, "JPEG", quality=92)
    data = buffer.getvalue()
    assert image_size(data) == (HEIGHT, WIDTH)
    assert decode_rgb(data).shape == (HEIGHT, WIDTH, 3)
    assert decode_rgb(data, (150, 200)).shape == (150, 200, 3)  # 1/8: exactly the minimum
    assert decode_rgb(data, (151, 200)).shape == (300, 400, 3)  # one row more needs 1/4
    transform = DetectionTransform(128, train=False)
    assert transform.min_source_size(HEIGHT, WIDTH) == (96, 128)  # the fit: 128 / 1600
    train = DetectionTransform(512, train=True)  # default jitter up to 1.25x the fit
    assert train.min_source_size(HEIGHT, WIDTH) == (480, 640)


@pytest.mark.parametrize("size", [128, 512])
def test_targets_and_pixels_from_a_reduced_jpeg_match_a_full_decode(tmp_path, size):
    """The same photo as JPEG (decoded at 1/8 or 1/2) and PNG (full size, PIL): boxes within a pixel, the same
    scale back to original px, and the same picture."""
    transform = DetectionTransform(size, train=False)
    jpeg = DetectionDataset(_dataset(tmp_path / "jpeg", "jpg"), "val", transform)
    png = DetectionDataset(_dataset(tmp_path / "png", "png"), "val", transform)
    (jpeg_image, jpeg_target), (png_image, png_target) = jpeg[0], png[0]
    assert jpeg_target["scale"] == pytest.approx(png_target["scale"], rel=1e-6)
    np.testing.assert_allclose(jpeg_target["boxes"].numpy(), png_target["boxes"].numpy(), atol=1.0)
    back = jpeg_target["boxes"].numpy() / jpeg_target["scale"]  # what evaluation does
    np.testing.assert_allclose(back, np.array(BOXES), atol=1.0 / jpeg_target["scale"])
    assert float((jpeg_image - png_image).abs().mean()) < 0.05  # normalised units: about 3 grey levels


def test_a_truncated_jpeg_names_the_image(tmp_path):
    root = _dataset(tmp_path / "jpeg", "jpg")
    path = root / "images" / "photo.jpg"
    path.write_bytes(path.read_bytes()[:2000])
    dataset = DetectionDataset(root, "val", DetectionTransform(128, train=False))
    with pytest.raises(DatasetError, match=r"photo\.jpg: image id 1: cannot read image"):
        dataset[0]
