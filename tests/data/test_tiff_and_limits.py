"""TIFF as orthophotos come (8 and 16 bits, compressed, planar, grey) is read correctly or refused by name, and an
image past the pixel limit (a decompression bomb included) is refused from its header, in validation, training
data and prediction alike."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pipeline.config import ConfigError, load_config
from pipeline.data import DatasetError, DetectionDataset, DetectionTransform
from pipeline.data.decode import ImageTooLarge, decode_rgb, image_size
from pipeline.data.validate import CORRUPT_IMAGE, IMAGE_TOO_LARGE, validate_dataset
from pipeline.registry.errors import ImageInputError
from pipeline.registry.predict import decode_image


def _tiff(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def _twelve_bit(height: int = 40, width: int = 50) -> np.ndarray:
    """uint16 RGB holding 12-bit values (0-4095), as many orthophoto sensors write them: a ramp per band."""
    ramp = np.linspace(0, 4095, height * width).reshape(height, width)
    return np.stack([ramp, ramp[::-1], np.full_like(ramp, 2000)], -1).astype(np.uint16)


def test_an_8_bit_rgb_tiff_reads_exactly_compressed_or_not():
    rgb = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    for compression in (None, "lzw", "zlib", "packbits"):
        data = _tiff(rgb, compression=compression)
        assert image_size(data) == (30, 40)
        np.testing.assert_array_equal(decode_rgb(data), rgb, err_msg=str(compression))


def test_a_16_bit_tiff_is_stretched_over_its_own_range_not_cut_to_its_low_byte():
    source = _twelve_bit()
    decoded = decode_rgb(_tiff(source, compression="lzw"))
    assert decoded.dtype == np.uint8 and decoded.shape == (40, 50, 3)
    # the 12-bit ramp spans the 8-bit range (PIL reads this file as 8-bit RGB with the wrong bytes)
    assert decoded[..., 0].min() == 0 and decoded[..., 0].max() == 255
    order = np.argsort(source[..., 0], axis=None, kind="stable")
    assert np.all(np.diff(decoded[..., 0].reshape(-1)[order].astype(int)) >= 0)  # monotone in the source
    # one stretch for all bands: the constant band keeps its place between the others' extremes
    assert abs(int(decoded[0, 0, 2]) - round(2000 / 4095 * 255)) <= 2
    planar = _tiff(np.ascontiguousarray(source.transpose(2, 0, 1)), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(decode_rgb(planar), decoded)
    grey = decode_rgb(_tiff(source[..., 0]))
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
    # its own percentiles, those of the RGB file's bands together within a level
    np.testing.assert_allclose(grey[..., 0], decoded[..., 0], atol=1)


def test_a_four_band_tiff_is_read_as_its_first_three_and_more_bands_or_cmyk_are_refused():
    rgbn = np.random.default_rng(1).integers(0, 256, (20, 20, 4), dtype=np.uint8)
    np.testing.assert_array_equal(decode_rgb(_tiff(rgbn, photometric="rgb", extrasamples=[0])), rgbn[..., :3])
    with pytest.raises(ValueError, match="6-band TIFF"):
        decode_rgb(_tiff(np.zeros((10, 10, 6), np.uint16), photometric="minisblack", planarconfig="contig"))
    with pytest.raises(ValueError, match="CMYK"):
        decode_rgb(_tiff(rgbn, photometric="separated"))


def test_palette_and_white_is_zero_tiffs_read_as_they_display():
    index = np.arange(12, dtype=np.uint8).reshape(3, 4)
    colormap = np.zeros((3, 256), np.uint16)  # [3, 2**8] uint16: red ramps with the index, green full, blue none
    colormap[0], colormap[1] = np.arange(256) * 257, 65535
    rgb = decode_rgb(_tiff(index, photometric="palette", colormap=colormap))
    np.testing.assert_array_equal(rgb[..., 0], index)
    assert (rgb[..., 1] == 255).all() and (rgb[..., 2] == 0).all()
    np.testing.assert_array_equal(decode_rgb(_tiff(index, photometric="miniswhite"))[..., 0], 255 - index)


def test_a_truncated_tiff_is_refused_naming_the_file(tmp_path):
    data = _tiff(_twelve_bit())
    path = tmp_path / "ortho.tif"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageInputError, match=r"image 0: cannot decode file '.*ortho\.tif': unreadable TIFF"):
        decode_image(path)


def _bomb_png() -> bytes:
    """65 bytes of PNG declaring a 30,000 x 30,000 grey image (900 megapixels once decoded): its header chunk, an
    empty compressed stream and the end chunk, each with its CRC, as a bomb's header reads to any decoder."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)  # 8-bit grey, deflate, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_from_its_header():
    bomb = _bomb_png()
    assert len(bomb) < 100 and image_size(bomb) == (30000, 30000)
    with pytest.raises(ImageTooLarge, match="30000x30000 = 900 megapixels, past the limit of 400 megapixels"):
        decode_rgb(bomb)
    with pytest.raises(ImageInputError, match="image 3: 65 encoded bytes refused: image is 30000x30000"):
        decode_image(bomb, 3)
    small = decode_rgb(_tiff(np.zeros((100, 100), np.uint8)), max_pixels=10_000)
    assert small.shape == (100, 100, 3)  # at the limit: read
    with pytest.raises(ImageTooLarge, match="past the limit of 0 megapixels"):
        decode_rgb(_tiff(np.zeros((101, 100), np.uint8)), max_pixels=10_000)


def _tiff_dataset(root: Path, files: dict[str, bytes], sizes: dict[str, tuple[int, int]]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    images = []
    for k, (name, data) in enumerate(files.items(), start=1):
        (root / "images" / name).write_bytes(data)
        height, width = sizes[name]
        images.append({"id": k, "file_name": name, "width": width, "height": height})
    split = {
        "images": images,
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10], "area": 100, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "tree"}],
    }
    for name in ("train", "val"):
        (root / "annotations" / f"{name}.json").write_text(json.dumps(split))
    return root


def test_a_16_bit_tiff_dataset_validates_and_loads_and_bad_files_are_named(tmp_path):
    good = _tiff_dataset(tmp_path / "good", {"a.tif": _tiff(_twelve_bit(), compression="zlib")}, {"a.tif": (40, 50)})
    assert validate_dataset(good).ok
    dataset = DetectionDataset(good, "train", DetectionTransform(64, train=False))
    tensor, target = dataset[0]
    assert tensor.shape == (3, 64, 64) and target["boxes"].shape == (1, 4)

    whole = _tiff(_twelve_bit())
    files = {"a.tif": whole, "cut.tif": whole[: len(whole) // 2], "bomb.png": _bomb_png()}
    sizes = {"a.tif": (40, 50), "cut.tif": (40, 50), "bomb.png": (40, 50)}  # the bomb's JSON lies about its size
    report = validate_dataset(_tiff_dataset(tmp_path / "bad", files, sizes))
    found = {(p.kind, p.record.split(" (")[0]): p.message for p in report.fatal}
    assert set(found) == {(CORRUPT_IMAGE, "image id 2"), (IMAGE_TOO_LARGE, "image id 3")}, found
    assert "unreadable TIFF" in found[(CORRUPT_IMAGE, "image id 2")]
    assert "header says: image is 30000x30000" in found[(IMAGE_TOO_LARGE, "image id 3")]

    # data.max_image_pixels: a JSON record past it is refused without opening a file
    report = validate_dataset(good, check_images="none", max_pixels=1_000)
    assert [(p.kind, p.record) for p in report.fatal] == [(IMAGE_TOO_LARGE, "image id 1")] * 2  # train and val
    with pytest.raises(DatasetError, match="image id 1.*past the limit"):
        DetectionDataset(good, "train", DetectionTransform(64, train=False), max_pixels=1_000)[0]


def test_the_pixel_limit_is_a_checked_config_key():
    assert load_config(None, ["data.max_image_pixels=1000000000"]).data.max_image_pixels == 1_000_000_000
    with pytest.raises(ConfigError, match="data.max_image_pixels"):
        load_config(None, ["data.max_image_pixels=100"])
