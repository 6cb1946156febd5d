"""YOLO datasets: the Ultralytics and Darknet layouts in, the Ultralytics layout out, round trips exact to the
pixel, background images, and every malformed label refused with its file and line before anything is written."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from PIL import Image

from pipeline.cli import data as data_cli
from pipeline.data import DatasetError, export_yolo, import_yolo, write_synthetic_dataset

# split -> stem -> (width, height, label lines or None for no label file)
YOLO = {
    "train": {
        "a": (200, 100, ["1 0.25 0.5 0.1 0.2", "0 0.5 0.5 1 1"]),
        "b": (64, 48, []),  # an empty label file: a background image
        "c": (80, 80, None),  # no label file: a background image too
    },
    "val": {"d": (120, 90, ["2 0.5 0.25 0.5 0.5"])},
}
NAMES = ["car", "tree", "house"]


def write_ultralytics(root: Path, data_yaml: str | None = None) -> Path:
    for split, images in YOLO.items():
        for stem, (width, height, lines) in images.items():
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (width, height), (40, 90, 60)).save(root / "images" / split / f"{stem}.png")
            if lines is not None:
                (root / "labels" / split).mkdir(parents=True, exist_ok=True)
                (root / "labels" / split / f"{stem}.txt").write_text("".join(f"{line}\n" for line in lines))
    default = f"train: images/train\nval: images/val\nnc: 3\nnames: {NAMES}\n"
    (root / "data.yaml").write_text(data_yaml or default)
    return root


def splits(ds: Path) -> dict[str, dict]:
    return {s: json.loads((ds / "annotations" / f"{s}.json").read_text()) for s in ("train", "val")}


def boxes_by_image(data: dict) -> dict[str, list[tuple[int, list[float]]]]:
    names = {im["id"]: im["file_name"] for im in data["images"]}
    out: dict[str, list] = {name: [] for name in names.values()}
    for ann in data["annotations"]:
        out[names[ann["image_id"]]].append((ann["category_id"], ann["bbox"]))
    return out


def test_ultralytics_import_gives_pixel_boxes_classes_and_background_images(tmp_path):
    report = import_yolo(write_ultralytics(tmp_path / "yolo"), tmp_path / "out")
    assert report.fatal == []
    data = splits(tmp_path / "out")
    assert data["train"]["categories"] == [
        {"id": 1, "name": "car"},
        {"id": 2, "name": "tree"},
        {"id": 3, "name": "house"},
    ]
    train, val = boxes_by_image(data["train"]), boxes_by_image(data["val"])
    # 1 0.25 0.5 0.1 0.2 on 200x100: x = (0.25 - 0.05) * 200 = 40, y = (0.5 - 0.1) * 100 = 40, w = 20, h = 20
    assert train["train/a.png"] == [(2, [40.0, 40.0, 20.0, 20.0]), (1, [0.0, 0.0, 200.0, 100.0])]
    assert train["train/b.png"] == [] and train["train/c.png"] == []  # both kinds of background image are kept
    assert val == {"val/d.png": [(3, [30.0, 0.0, 60.0, 45.0])]}  # the given val split is kept as it is
    sizes = {im["file_name"]: (im["width"], im["height"]) for im in data["train"]["images"]}
    assert sizes == {"train/a.png": (200, 100), "train/b.png": (64, 48), "train/c.png": (80, 80)}
    assert (tmp_path / "out" / "images" / "val" / "d.png").is_file()


def test_a_dataset_exported_and_imported_again_has_the_same_boxes_to_the_pixel(tmp_path):
    source = write_synthetic_dataset(tmp_path / "src", num_images=12, size=96, seed=3, preset="dense")
    summary = export_yolo(source, tmp_path / "yolo")
    before = splits(source)
    assert summary.boxes == {s: len(before[s]["annotations"]) for s in before} and summary.crowd_left_out == 0
    import_yolo(tmp_path / "yolo", tmp_path / "back")
    after = splits(tmp_path / "back")
    named = [{"id": c["id"], "name": c["name"]} for c in before["train"]["categories"]]
    assert after["train"]["categories"] == named  # YOLO keeps ids and names (no supercategory)
    for split in ("train", "val"):
        old, new = boxes_by_image(before[split]), boxes_by_image(after[split])
        assert sorted(new) == sorted(f"{split}/{name}" for name in old)
        for name, boxes in old.items():
            back = new[f"{split}/{name}"]
            assert [c for c, _ in back] == [c for c, _ in boxes]
            for (_, b0), (_, b1) in zip(boxes, back, strict=True):
                assert max(abs(u - v) for u, v in zip(b0, b1, strict=True)) < 1e-4, (name, b0, b1)
        image = (tmp_path / "back" / "images" / split / before[split]["images"][0]["file_name"]).read_bytes()
        assert image == (source / "images" / before[split]["images"][0]["file_name"]).read_bytes()


def test_a_yolo_set_imported_and_exported_again_has_the_same_labels(tmp_path):
    import_yolo(write_ultralytics(tmp_path / "yolo"), tmp_path / "ds")
    export_yolo(tmp_path / "ds", tmp_path / "again")
    for split, images in YOLO.items():
        for stem, (_, _, lines) in images.items():
            written = (tmp_path / "again" / "labels" / split / f"{stem}.txt").read_text().split("\n")
            parsed = [[float(v) for v in line.split()] for line in written if line]
            assert parsed == [[float(v) for v in line.split()] for line in lines or []], (split, stem)
    meta = (tmp_path / "again" / "data.yaml").read_text()
    assert "names:\n  0: car\n  1: tree\n  2: house" in meta and "nc: 3" in meta


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1 0.5 0.5 0.2", "4 fields, expected 5"),
        ("1 0.1 0.1 0.2 0.1 0.3 0.3 0.2 0.4", "segmentation polygon"),
        ("1 0.5 x 0.2 0.2", "not numbers"),
        ("1 1.2 0.5 0.2 0.2", "cx=1.2 outside [0, 1]"),
        ("1 0.5 0.5 0.2 -0.1", "h=-0.1 outside [0, 1]"),
        ("1 0.5 0.5 0 0.2", "empty box"),
        ("3 0.5 0.5 0.2 0.2", "class id 3 unknown (the names give 0-2)"),
        ("1.5 0.5 0.5 0.2 0.2", "not numbers"),
    ],
)
def test_each_malformed_label_line_is_refused_with_its_file_and_line(tmp_path, line, message):
    root = write_ultralytics(tmp_path / "yolo")
    label = root / "labels" / "train" / "a.txt"
    label.write_text(f"0 0.5 0.5 0.1 0.1\n{line}\n")
    with pytest.raises(DatasetError, match="nothing written") as error:
        import_yolo(root, tmp_path / "out")
    assert f"{label}:2: " in str(error.value) and message in str(error.value)
    assert f"{label}:1" not in str(error.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_every_problem_is_reported_at_once_a_label_without_image_among_them(tmp_path):
    root = write_ultralytics(tmp_path / "yolo")
    (root / "labels" / "val" / "d.txt").write_text("2 0.5 0.5 0.2\n\n9 0.5 0.5 0.2 0.2\n")
    (root / "labels" / "train" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError) as error:
        import_yolo(root, tmp_path / "out")
    text = str(error.value)
    assert "3 problem(s)" in text
    assert f"{root / 'labels' / 'val' / 'd.txt'}:1: 4 fields" in text
    assert f"{root / 'labels' / 'val' / 'd.txt'}:3: class id 9 unknown" in text
    assert f"{root / 'labels' / 'train' / 'ghost.txt'}: label file without an image" in text
    assert not (tmp_path / "out").exists()


def test_the_flat_darknet_layout_with_a_names_file_splits_reproducibly(tmp_path):
    root = tmp_path / "darknet"
    root.mkdir()
    (root / "obj.names").write_text("person\nbike\n")
    for i in range(10):
        Image.new("RGB", (50, 40)).save(root / f"im{i}.jpg")
        (root / f"im{i}.txt").write_text(f"{i % 2} 0.5 0.5 0.2 0.5\n")
    import_yolo(root, tmp_path / "a", val_fraction=0.3, seed=1)
    import_yolo(root, tmp_path / "b", val_fraction=0.3, seed=1)
    a, b = splits(tmp_path / "a"), splits(tmp_path / "b")
    assert a == b and len(a["val"]["images"]) == 3 and len(a["train"]["images"]) == 7
    assert [c["name"] for c in a["train"]["categories"]] == ["person", "bike"]
    assert boxes_by_image(a["train"])[a["train"]["images"][0]["file_name"]][0][1] == [20.0, 10.0, 10.0, 20.0]
    (root / "obj.names").unlink()
    with pytest.raises(DatasetError, match="no class names file"):
        import_yolo(root, tmp_path / "c")


def test_data_yaml_forms_roboflow_paths_id_maps_and_bad_entries(tmp_path):
    root = write_ultralytics(
        tmp_path / "rf", "train: ../images/train\nval: ../images/val\nnames: {0: car, 1: tree, 2: house}\n"
    )
    import_yolo(root, tmp_path / "out")  # Roboflow's ../ beside its data.yaml, names as a mapping
    assert len(splits(tmp_path / "out")["val"]["annotations"]) == 1
    (root / "data.yaml").write_text(f"train: images/train\nnc: 4\nnames: {NAMES}\n")
    with pytest.raises(DatasetError, match="nc is 4 but names lists 3"):
        import_yolo(root, tmp_path / "out2")
    (root / "data.yaml").write_text(f"train: images/nowhere\nnames: {NAMES}\n")
    with pytest.raises(DatasetError, match="nowhere does not exist"):
        import_yolo(root, tmp_path / "out3")
    (root / "data.yaml").write_text(f"train: images/train\nnames: {NAMES}\n")  # no val: a seeded split of train
    import_yolo(root / "data.yaml", tmp_path / "out4", val_fraction=0.34)
    assert [len(s["images"]) for s in splits(tmp_path / "out4").values()] == [2, 1]


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    data_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["data", *argv])
    return args.func(args)


def test_cli_import_and_export_yolo(tmp_path, capsys):
    root = write_ultralytics(tmp_path / "yolo")
    assert run_cli("import-yolo", str(root), "--out", str(tmp_path / "ds")) == 0
    assert run_cli("export-yolo", str(tmp_path / "ds"), "--out", str(tmp_path / "back")) == 0
    assert "train: 3 images, 2 boxes, val: 1 images, 1 boxes" in capsys.readouterr().out
    (root / "labels" / "train" / "a.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    assert run_cli("import-yolo", str(root), "--out", str(tmp_path / "ds2")) == 1
    assert f"{root / 'labels' / 'train' / 'a.txt'}:1: class id 7 unknown" in capsys.readouterr().err
    assert not (tmp_path / "ds2").exists()
