"""The demo dataset (deterministic, valid, varied) and the `data` CLI: synth, import-voc, validate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.cli import data as data_cli
from pipeline.data import validate_dataset, write_synthetic_dataset


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    data_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["data", *argv])
    return args.func(args)


def annotations(ds: Path) -> list[dict]:
    return [
        a for s in ("train", "val") for a in json.loads((ds / "annotations" / f"{s}.json").read_text())["annotations"]
    ]


def test_synthetic_dataset_is_deterministic_valid_and_varied(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", num_images=24, size=96, seed=5)
    b = write_synthetic_dataset(tmp_path / "b", num_images=24, size=96, seed=5)
    c = write_synthetic_dataset(tmp_path / "c", num_images=24, size=96, seed=6)
    for split in ("train", "val"):
        assert (a / "annotations" / f"{split}.json").read_bytes() == (b / "annotations" / f"{split}.json").read_bytes()
    assert (a / "images" / "00007.jpg").read_bytes() == (b / "images" / "00007.jpg").read_bytes()
    assert (a / "images" / "00007.jpg").read_bytes() != (c / "images" / "00007.jpg").read_bytes()
    report = validate_dataset(a)
    assert report.problems == [] and report.num_images == {"train": 19, "val": 5}
    anns = annotations(a)
    assert {x["category_id"] for x in anns} == {1, 2, 3}
    sides = np.array([x["bbox"][2:] for x in anns])
    areas = sides.prod(axis=1)
    assert (areas < 16**2).any() and (areas > 40**2).any()  # small and large objects (at 96 px)
    assert overlapping_pair(anns)  # occlusion happens


def overlapping_pair(anns: list[dict]) -> bool:
    by_image: dict[int, list] = {}
    for x in anns:
        by_image.setdefault(x["image_id"], []).append(x["bbox"])
    for boxes in by_image.values():
        for i, (x1, y1, w1, h1) in enumerate(boxes):
            for x2, y2, w2, h2 in boxes[i + 1 :]:
                if x1 < x2 + w2 and x2 < x1 + w1 and y1 < y2 + h2 and y2 < y1 + h1:
                    return True
    return False


def test_boxes_are_tight_around_the_visible_object(tmp_path):
    ds = write_synthetic_dataset(tmp_path / "s", num_images=6, size=96, seed=1)
    train = json.loads((ds / "annotations" / "train.json").read_text())
    ann = max(train["annotations"], key=lambda x: x["area"])
    x, y, w, h = ann["bbox"]
    image = np.asarray(Image.open(ds / "images" / f"{ann['image_id'] - 1:05d}.jpg").convert("RGB")).astype(int)
    crop = image[y : y + h, x : x + w]
    target = np.array([(220, 40, 40), (40, 200, 60), (50, 80, 230)][ann["category_id"] - 1])
    close = (np.abs(crop - target).max(axis=2) < 60).mean()
    assert close > 0.3  # the box holds mostly the object's colour


def test_cli_synth_then_validate(tmp_path, capsys):
    assert run_cli("synth", "--out", str(tmp_path / "demo"), "--images", "10", "--size", "64", "--seed", "2") == 0
    assert run_cli("validate", str(tmp_path / "demo")) == 0
    assert "0 fatal problem(s)" in capsys.readouterr().out
    assert run_cli("validate", str(tmp_path / "demo"), "--max-image-pixels", "4000") == 1  # 64 x 64 = 4,096
    assert "[image_too_large]" in capsys.readouterr().out
    assert run_cli("synth", "--out", str(tmp_path / "demo"), "--images", "10") == 1  # refuses to overwrite
    assert "exists" in capsys.readouterr().err


def test_cli_validate_lists_each_planted_error(make_dataset, capsys):
    def plant(train, val):
        train["annotations"][0]["category_id"] = 99  # annotation id 1
        train["annotations"][1]["bbox"] = [1, 1, 0, 0]  # annotation id 2
        train["annotations"][3]["bbox"] = [-2, -2, 10, 10]  # annotation id 4: fixable
        val["images"][1]["id"] = 101  # image id 101 twice, which orphans image 102's two boxes

    ds = make_dataset(plant)
    (ds / "images" / "img_3.png").write_bytes(b"garbage")
    assert run_cli("validate", str(ds)) == 1
    out = capsys.readouterr().out
    for expected in [
        "[unknown_category_id]",
        "annotation id 1 ",
        "[zero_area_box]",
        "annotation id 2 ",
        "FIXED [box_clipped]",
        "annotation id 4 ",
        "[duplicate_id]",
        "image id 101: used 2 times",
        "[corrupt_image]",
        "image id 3 ",
        "[unknown_image_id]",
        "annotation id 1003 (image id 102): unknown image id 102",
        "6 fatal problem(s), 1 fixable",
    ]:
        assert expected in out, expected


def test_cli_import_voc(tmp_path, capsys):
    voc = tmp_path / "voc"
    voc.mkdir()
    for stem, objects in {"x": [("cat", 1, 1, 10, 10)], "y": [("dog", 2, 2, 9, 9), ("cat", 3, 3, 5, 5)]}.items():
        Image.new("RGB", (16, 12)).save(voc / f"{stem}.png")
        body = "".join(
            f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
            "</bndbox></object>"
            for n, a, b, c, d in objects
        )
        (voc / f"{stem}.xml").write_text(f"<annotation><filename>{stem}.png</filename>{body}</annotation>")
    assert run_cli("import-voc", str(voc), "--out", str(tmp_path / "out"), "--val-fraction", "0.5", "--seed", "1") == 0
    assert len(annotations(tmp_path / "out")) == 3
    (voc / "y.xml").write_text("<annotation>")
    assert run_cli("import-voc", str(voc), "--out", str(tmp_path / "out2")) == 1
    assert "y.xml: malformed XML" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("argv", [["synth", "--out", "x", "--images", "1"], ["synth", "--out", "x", "--size", "8"]])
def test_cli_rejects_bad_synth_options(tmp_path, argv, capsys):
    argv[2] = str(tmp_path / "x")
    assert run_cli(*argv) == 1
    assert "need num_images >= 2" in capsys.readouterr().err


def test_dense_preset_has_many_small_overlapping_objects_of_five_classes(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", num_images=12, size=384, seed=3, preset="dense")
    b = write_synthetic_dataset(tmp_path / "b", num_images=12, size=384, seed=3, preset="dense")
    assert (a / "annotations" / "train.json").read_bytes() == (b / "annotations" / "train.json").read_bytes()
    assert validate_dataset(a).problems == []
    anns = annotations(a)
    per_image = np.bincount([x["image_id"] for x in anns])[1:]
    sides = np.sqrt(np.array([x["bbox"][2] * x["bbox"][3] for x in anns]))
    assert per_image.min() >= 10 and per_image.mean() > 25  # dense
    assert np.median(sides) < 24 and sides.max() <= 45  # small: 8-40 px objects (visible parts)
    assert {x["category_id"] for x in anns} == {1, 2, 3, 4, 5}
    assert overlapping_pair(anns)


def test_overhead_preset_looks_seen_from_above_with_many_small_vehicles(tmp_path):
    from pipeline.config.data import SYNTH_PRESETS
    from pipeline.data.auto_fit import judge_view
    from pipeline.data.coco_index import load_split
    from pipeline.data.synth import PRESETS

    assert tuple(PRESETS) == SYNTH_PRESETS  # the config's check names every preset
    a = write_synthetic_dataset(tmp_path / "a", num_images=10, size=512, seed=3, preset="overhead", val_fraction=0.2)
    b = write_synthetic_dataset(tmp_path / "b", num_images=10, size=512, seed=3, preset="overhead", val_fraction=0.2)
    assert (a / "annotations" / "train.json").read_bytes() == (b / "annotations" / "train.json").read_bytes()
    assert validate_dataset(a).problems == []
    anns = annotations(a)
    sides = np.sqrt(np.array([x["bbox"][2] * x["bbox"][3] for x in anns]))
    by_class = np.bincount([x["category_id"] for x in anns], minlength=5)[1:]  # car, truck, tree, building
    assert by_class[0] == by_class.max() and by_class.min() > 0  # cars outnumber the rest, every class appears
    assert np.median(sides) < 16 and sides.max() > 40  # mostly small, sizes varied
    assert judge_view(load_split(a, "train")[2])[0] == "overhead"


def test_cli_synth_dense_then_analyze(tmp_path, capsys, check_plot):
    out = tmp_path / "dense"
    assert run_cli("synth", "--preset", "dense", "--out", str(out), "--images", "8") == 0
    assert "8 dense images (384 px)" in capsys.readouterr().out
    plot = tmp_path / "anchors.png"
    assert run_cli("analyze", str(out), "--set", "model.image_size=384", "--plot", str(plot)) == 0
    report = capsys.readouterr().out
    assert "model lite0 at 384x384 px" in report and "no anchor at IoU >= 0.5" in report
    assert "model.min_level=2" in report  # small objects: the advice adds a stride-4 level
    check_plot(plot)
    assert run_cli("analyze", str(tmp_path / "missing")) == 1
    assert "missing" in capsys.readouterr().err
