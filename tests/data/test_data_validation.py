"""Bad-input tests for `validate_dataset`: one per problem, each error naming its file and record."""

from __future__ import annotations

import pytest
from PIL import Image

from pipeline.data import DatasetError, DetectionDataset, DetectionTransform, build_dataloaders, validate_dataset
from pipeline.data import validate as v


def fatal_message(dataset_dir) -> str:
    with pytest.raises(DatasetError) as info:
        validate_dataset(dataset_dir).raise_if_fatal()
    return str(info.value)


def test_valid_dataset_has_no_problems(make_dataset):
    report = validate_dataset(make_dataset())
    assert report.problems == []
    assert report.num_images == {"train": 5, "val": 4}
    assert report.num_annotations == {"train": 8, "val": 6}
    report.raise_if_fatal()


def test_missing_image_names_image_id(make_dataset):
    ds = make_dataset()
    (ds / "images" / "img_2.png").unlink()
    report = validate_dataset(ds)
    assert [p.kind for p in report.fatal] == [v.MISSING_IMAGE]
    message = fatal_message(ds)
    assert "image id 2" in message and "img_2.png" in message and "train.json" in message


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_corrupt_image_names_image_id(make_dataset, content):
    ds = make_dataset()
    (ds / "images" / "img_103.png").write_bytes(content)
    report = validate_dataset(ds)
    assert [p.kind for p in report.fatal] == [v.CORRUPT_IMAGE]
    assert "image id 103" in fatal_message(ds) and "val.json" in fatal_message(ds)


def test_truncated_image_is_corrupt(make_dataset):
    ds = make_dataset()
    path = ds / "images" / "img_1.png"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    assert [p.kind for p in validate_dataset(ds).fatal] == [v.CORRUPT_IMAGE]
    assert "image id 1" in fatal_message(ds)


def test_box_entirely_outside_image_is_fatal(make_dataset):
    def plant(train, val):
        train["annotations"][2]["bbox"] = [500, 10, 20, 20]  # annotation id 3, image 2 (80 px wide)

    ds = make_dataset(plant)
    assert [p.kind for p in validate_dataset(ds).fatal] == [v.BOX_OUTSIDE]
    assert "annotation id 3 (image id 2, img_2.png)" in fatal_message(ds)


def test_box_slightly_outside_is_clipped_and_counted(make_dataset):
    def plant(train, val):
        train["annotations"][0]["bbox"] = [-3, 40, 20, 15]  # image 1 is 64x48: clipped to x 0..17, y 40..48

    ds = make_dataset(plant)
    report = validate_dataset(ds)
    assert report.fatal == [] and [p.kind for p in report.fixable] == [v.BOX_CLIPPED]
    assert "annotation id 1" in str(report.fixable[0])
    report.raise_if_fatal()
    dataset = DetectionDataset(ds, "train", DetectionTransform(64))
    assert dataset.records[0].boxes[0].tolist() == [0.0, 40.0, 17.0, 48.0]


@pytest.mark.parametrize("bbox", [[5, 5, 0, 10], [5, 5, 10, 0], [5, 5, -4, 10]])
def test_zero_area_box_is_fatal(make_dataset, bbox):
    def plant(train, val):
        val["annotations"][1]["bbox"] = bbox  # annotation id 1002

    ds = make_dataset(plant)
    assert [p.kind for p in validate_dataset(ds).fatal] == [v.ZERO_AREA_BOX]
    assert "annotation id 1002" in fatal_message(ds)


def test_unknown_category_id_is_fatal(make_dataset):
    def plant(train, val):
        train["annotations"][4]["category_id"] = 42

    ds = make_dataset(plant)
    assert [p.kind for p in validate_dataset(ds).fatal] == [v.UNKNOWN_CATEGORY]
    message = fatal_message(ds)
    assert "annotation id 5" in message and "42" in message


def test_unknown_image_id_is_fatal(make_dataset):
    def plant(train, val):
        train["annotations"][1]["image_id"] = 999

    ds = make_dataset(plant)
    assert [p.kind for p in validate_dataset(ds).fatal] == [v.UNKNOWN_IMAGE]
    assert "annotation id 2 (image id 999)" in fatal_message(ds)


@pytest.mark.parametrize(
    ("key", "index", "record"),
    [("images", 1, "image id 1"), ("annotations", 3, "annotation id 1"), ("categories", 0, "category id 1")],
)
def test_duplicate_ids_are_fatal(make_dataset, key, index, record):
    def plant(train, val):
        train[key][index]["id"] = train[key][0]["id"] if key != "categories" else 1
        if key == "images":
            for ann in train["annotations"]:
                ann["image_id"] = 1 if ann["image_id"] == 2 else ann["image_id"]

    ds = make_dataset(plant)
    kinds = [p.kind for p in validate_dataset(ds).fatal]
    assert v.DUPLICATE_ID in kinds
    assert f"{record}: used 2 times" in fatal_message(ds)


def test_malformed_json_names_line(make_dataset):
    ds = make_dataset()
    (ds / "annotations" / "val.json").write_text('{"images": [\n  {"id": 1,, }\n')
    report = validate_dataset(ds)
    assert [p.kind for p in report.fatal] == [v.MALFORMED_JSON]
    assert "val.json" in fatal_message(ds) and "line 2" in fatal_message(ds)


def test_json_without_required_keys(make_dataset):
    ds = make_dataset()
    (ds / "annotations" / "train.json").write_text('{"images": []}')
    message = fatal_message(ds)
    assert "train.json" in message and "annotations" in message and "categories" in message


def test_malformed_records_are_named(make_dataset):
    def plant(train, val):
        train["annotations"][0]["bbox"] = [1, 2, "3", 4]
        train["images"][2]["width"] = -5

    ds = make_dataset(plant)
    message = fatal_message(ds)
    assert "annotation id 1" in message and "image id 3" in message
    assert [p.kind for p in validate_dataset(ds).fatal].count(v.MALFORMED_RECORD) == 2


def test_size_mismatch_and_missing_split(make_dataset):
    ds = make_dataset()
    Image.new("RGB", (65, 48)).save(ds / "images" / "img_1.png")  # the JSON says 64x48
    (ds / "annotations" / "val.json").unlink()
    kinds = {p.kind for p in validate_dataset(ds).fatal}
    assert kinds == {v.SIZE_MISMATCH, v.MISSING_SPLIT}
    assert "image id 1" in fatal_message(ds) and "val.json" in fatal_message(ds)


def test_splits_with_different_categories(make_dataset):
    def plant(train, val):
        val["categories"][0]["name"] = "wolf"

    assert [p.kind for p in validate_dataset(make_dataset(plant)).fatal] == [v.CATEGORY_MISMATCH]


def test_training_loader_refuses_a_fatal_dataset(make_dataset):
    def plant(train, val):
        train["annotations"][0]["category_id"] = 5

    with pytest.raises(DatasetError, match="annotation id 1"):
        build_dataloaders(make_dataset(plant), 64, batch_size=2)


def test_every_planted_problem_is_reported_at_once(make_dataset):
    def plant(train, val):
        train["annotations"][0]["category_id"] = 5  # annotation id 1
        train["annotations"][1]["bbox"] = [1, 1, 0, 3]  # annotation id 2
        train["annotations"][2]["id"] = 4  # annotation id 4 twice
        val["annotations"][0]["bbox"] = [900, 900, 5, 5]  # annotation id 1001

    ds = make_dataset(plant)
    (ds / "images" / "img_102.png").unlink()
    records = {(p.kind, p.record.split(" (")[0]) for p in validate_dataset(ds).fatal}
    assert records == {
        (v.UNKNOWN_CATEGORY, "annotation id 1"),
        (v.ZERO_AREA_BOX, "annotation id 2"),
        (v.DUPLICATE_ID, "annotation id 4"),
        (v.BOX_OUTSIDE, "annotation id 1001"),
        (v.MISSING_IMAGE, "image id 102"),
    }


@pytest.mark.parametrize("file_name", ["../../../../etc/passwd", "/etc/passwd", "link/passwd"])
def test_image_paths_outside_the_images_folder_are_refused_unopened(make_dataset, tmp_path, file_name, monkeypatch):
    import json

    ds = make_dataset()
    path = ds / "annotations" / "train.json"
    train = json.loads(path.read_text())
    train["images"][0]["file_name"] = file_name  # image id 1 (planted after the images were written)
    path.write_text(json.dumps(train))
    (ds / "images" / "link").symlink_to("/etc", target_is_directory=True)
    opened = []
    original = v._decoded_image_size
    monkeypatch.setattr(v, "_decoded_image_size", lambda path, *a: opened.append(str(path)) or original(path, *a))
    report = v.validate_dataset(ds)
    escapes = [p for p in report.fatal if p.kind == v.PATH_ESCAPE]
    assert len(escapes) == 1 and escapes[0].record == "image id 1" and "outside" in escapes[0].message
    assert opened and not any("passwd" in path for path in opened)  # the other images were decoded
    for check_images in (True, False):  # refused even without opening any image
        assert v.PATH_ESCAPE in {p.kind for p in v.validate_dataset(ds, check_images=check_images).fatal}
