"""Pascal VOC import: a round trip on a VOC folder written here, a reproducible split, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data import DatasetError, DetectionDataset, DetectionTransform, import_voc, load_label_map

# file stem -> (width, height, [(name, xmin, ymin, xmax, ymax, difficult)])
VOC = {
    "a": (60, 40, [("dog", 1, 1, 20, 10, 0), ("cat", 30, 5, 60, 40, 0)]),
    "b": (50, 50, [("person", 10, 12, 25, 30, 1)]),
    "c": (40, 30, [("cat", 5, 6, 7, 8, 0), ("cat", 2, 2, 39, 29, 0), ("dog", 3, 3, 4, 4, 0)]),
    "d": (30, 30, []),
    "e": (45, 35, [("person", 20, 20, 30, 33, 0)]),
}


def voc_xml(stem: str, width: int, height: int, objects: list) -> str:
    body = "".join(
        f"<object><name>{n}</name><pose>Left</pose><truncated>0</truncated><difficult>{d}</difficult>"
        f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for n, x1, y1, x2, y2, d in objects
    )
    size = f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
    return f"<annotation><folder>VOC</folder><filename>{stem}.jpg</filename>{size}{body}</annotation>"


def write_voc(root: Path, layout: str = "voc") -> Path:
    """The standard VOC layout (Annotations/ + JPEGImages/) or a flat folder of XML + images."""
    xml_dir, image_dir = (root / "Annotations", root / "JPEGImages") if layout == "voc" else (root, root)
    xml_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    for stem, (width, height, objects) in VOC.items():
        (xml_dir / f"{stem}.xml").write_text(voc_xml(stem, width, height, objects))
        Image.new("RGB", (width, height), (90, 120, 150)).save(image_dir / f"{stem}.jpg")
    return root


def load_all(out: Path) -> tuple[dict, dict]:
    splits = [json.loads((out / "annotations" / f"{s}.json").read_text()) for s in ("train", "val")]
    return splits[0], splits[1]


@pytest.mark.parametrize("layout", ["voc", "flat"])
def test_voc_round_trip(tmp_path, layout):
    report = import_voc(write_voc(tmp_path / "voc", layout), tmp_path / "out", val_fraction=0.4, seed=3)
    assert report.fatal == []
    train, val = load_all(tmp_path / "out")
    assert (
        train["categories"]
        == val["categories"]
        == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "person"}]
    )
    assert len(val["images"]) == 2 and len(train["images"]) == 3
    names = {c["id"]: c["name"] for c in train["categories"]}
    for image in train["images"] + val["images"]:
        stem = Path(image["file_name"]).stem
        width, height, objects = VOC[stem]
        assert (image["width"], image["height"]) == (width, height)
        assert (tmp_path / "out" / "images" / image["file_name"]).is_file()
        anns = [a for a in train["annotations"] + val["annotations"] if a["image_id"] == image["id"]]
        assert len(anns) == len(objects)  # box counts
        for ann, (name, x1, y1, x2, y2, difficult) in zip(anns, objects, strict=True):
            assert names[ann["category_id"]] == name  # class names
            assert ann["bbox"] == [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1]  # 1-based inclusive -> COCO
            assert ann["iscrowd"] == difficult
    ids = [a["id"] for a in train["annotations"] + val["annotations"]]
    assert sorted(ids) == list(range(1, 8))


def test_voc_import_feeds_the_dataset(tmp_path):
    import_voc(write_voc(tmp_path / "voc"), tmp_path / "out", val_fraction=0.4, seed=3)
    assert load_label_map(tmp_path / "out").names == ("cat", "dog", "person")
    splits = [DetectionDataset(tmp_path / "out", split, DetectionTransform(64)) for split in ("train", "val")]
    by_stem = {Path(r.path).stem: r for dataset in splits for r in dataset.records}  # whichever split each fell in
    assert {"a", "b"} <= set(by_stem)
    assert len(by_stem["b"].labels) == 0  # the difficult object is a crowd region: left out of training
    np.testing.assert_array_equal(by_stem["a"].boxes, [[0, 0, 20, 10], [29, 4, 60, 40]])
    assert by_stem["a"].labels.tolist() == [1, 0]


def test_split_is_reproducible_and_seeded(tmp_path):
    voc = write_voc(tmp_path / "voc")

    def val_files(out: str, seed: int) -> list[str]:
        import_voc(voc, tmp_path / out, val_fraction=0.4, seed=seed)
        return sorted(im["file_name"] for im in load_all(tmp_path / out)[1]["images"])

    assert val_files("o1", 7) == val_files("o2", 7)
    assert len({tuple(val_files(f"s{seed}", seed)) for seed in range(6)}) > 1


def bad_voc(tmp_path: Path, stem: str, xml: str | None = None, remove_image: bool = False) -> Path:
    voc = write_voc(tmp_path / "voc")
    if xml is not None:
        (voc / "Annotations" / f"{stem}.xml").write_text(xml)
    if remove_image:
        (voc / "JPEGImages" / f"{stem}.jpg").unlink()
    return voc


@pytest.mark.parametrize(
    ("stem", "xml", "remove_image", "expected"),
    [
        ("c", "<annotation><filename>c.jpg</filename><object>", False, r"c\.xml: malformed XML"),
        ("b", None, True, r"b\.xml: image 'b\.jpg' not found"),
        ("e", voc_xml("e", 45, 35, [("person", 1, 2, "wide", 4, 0)]), False, r"e\.xml: object 0: <xmax> is 'wide'"),
        ("a", voc_xml("a", 60, 40, [("dog", 1, 1, 5, 5, 0), ("", 1, 1, 5, 5, 0)]), False, r"a\.xml: object 1: missing"),
        ("a", voc_xml("a", 61, 40, []), False, r"a\.xml: <size> says 61x40, image is 60x40"),
    ],
)
def test_bad_voc_input_names_the_record_and_writes_nothing(tmp_path, stem, xml, remove_image, expected):
    voc = bad_voc(tmp_path, stem, xml, remove_image)
    with pytest.raises(DatasetError, match=expected):
        import_voc(voc, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["voc"]  # no half-written temp dir left behind


def test_box_entirely_outside_fails_validation_with_its_record(tmp_path):
    voc = bad_voc(tmp_path, "d", voc_xml("d", 30, 30, [("cat", 40, 40, 50, 50, 0)]))
    with pytest.raises(DatasetError, match=r"box_outside_image.*annotation id \d+ \(image id 4, JPEGImages/d.jpg\)"):
        import_voc(voc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_output_is_not_overwritten(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        import_voc(write_voc(tmp_path / "voc"), tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
