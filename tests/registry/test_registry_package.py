"""The model package: round trip, refusal of tampered or incomplete artifacts (directly and through MLflow's
pyfunc loader), the pyfunc input forms, and the dataset fingerprint."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from pipeline.data import DatasetError
from pipeline.registry import ArtifactError, ImageInputError, dataset_fingerprint, load_package_dir, write_package
from pipeline.registry.package import CONFIG_FILE, LABEL_MAP_FILE, WEIGHTS_FILE
from pipeline.registry.predict import Detector


@pytest.fixture
def package_dir(tmp_path, make_model, label_map):
    write_package(make_model(5), label_map, tmp_path / "pkg")
    return tmp_path / "pkg"


def _edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_round_trip_gives_identical_outputs(package_dir, make_model, label_map):
    original = make_model(5)
    package = load_package_dir(package_dir)
    assert package.config == original.config and package.label_map == label_map
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        for got, want in zip(package.model(images)[0], original(images)[0], strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["model"].update(dropout_rate=0.3), r"unknown 'model' key\(s\) \['dropout_rate'\]"),
        (lambda d: d.update(extra=1), r"unknown model config key\(s\) \['extra'\]"),
        (lambda d: d["postprocess"].update(nms_thresh=0.4), r"unknown 'postprocess' key\(s\) \['nms_thresh'\]"),
        (lambda d: d["model"].pop("backbone"), r"'model' is missing key\(s\) \['backbone'\]"),
        (lambda d: d["model"].update(fusion="mean"), "fusion='mean' not supported"),
        (lambda d: d.update(num_classes=4), "4 classes"),
    ],
)
def test_bad_model_config_is_refused_naming_the_file(package_dir, change, message):
    _edit_json(package_dir / CONFIG_FILE, change)
    with pytest.raises(ArtifactError, match=message) as info:
        load_package_dir(package_dir)
    assert str(package_dir) in str(info.value)


@pytest.mark.parametrize("missing", [WEIGHTS_FILE, CONFIG_FILE, LABEL_MAP_FILE])
def test_missing_file_is_refused(package_dir, missing):
    (package_dir / missing).unlink()
    with pytest.raises(ArtifactError, match=f"{package_dir / missing} is missing"):
        load_package_dir(package_dir)


def test_tampered_weights_are_refused(package_dir):
    weights = load_file(str(package_dir / WEIGHTS_FILE))
    key = next(k for k in weights if k.startswith("class_head.predict.pw.weight"))
    weights[key] = torch.zeros(30, *weights[key].shape[1:])  # a head for 10 classes, not 3
    dropped = next(k for k in weights if k.startswith("box_head"))
    del weights[dropped]
    save_file(weights, str(package_dir / WEIGHTS_FILE))
    with pytest.raises(ArtifactError) as info:
        load_package_dir(package_dir)
    text = str(info.value)
    assert f"tensor '{key}' is (30, 32, 1, 1)" in text and "needs (27, 32, 1, 1)" in text
    assert f"missing tensor '{dropped}'" in text


def test_garbage_weights_file_is_refused(package_dir):
    (package_dir / WEIGHTS_FILE).write_bytes(b"\x00" * 64)
    with pytest.raises(ArtifactError, match="not a readable safetensors file"):
        load_package_dir(package_dir)


def test_label_map_mismatch_is_refused(package_dir):
    _edit_json(package_dir / LABEL_MAP_FILE, lambda d: (d["category_ids"].append(9), d["names"].append("x")))
    with pytest.raises(ArtifactError, match="4 labels but the model config says 3 classes"):
        load_package_dir(package_dir)


def test_pyfunc_loader_refuses_a_tampered_registered_model(registry, tmp_path):
    import mlflow.artifacts
    import mlflow.pyfunc

    from pipeline.registry.registry import using_tracking_uri

    with using_tracking_uri(registry.uri):
        local = mlflow.artifacts.download_artifacts(f"models:/{registry.name}/1", dst_path=str(tmp_path / "m"))
    # the three package files are the pyfunc artifacts; models from code: the entry file, no pickle
    files = {p.name for p in (tmp_path / "m").rglob("*") if p.is_file()}
    assert {WEIGHTS_FILE, CONFIG_FILE, LABEL_MAP_FILE, "pyfunc_entry.py"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))]
    config = next((tmp_path / "m").rglob(CONFIG_FILE))
    clean = config.read_text()
    _edit_json(config, lambda d: d["model"].update(secret_switch=True))
    with pytest.raises(ArtifactError, match="secret_switch"):
        mlflow.pyfunc.load_model(local)
    config.write_text(clean)
    shutil.copy(config, tmp_path / "backup.json")
    next((tmp_path / "m").rglob(LABEL_MAP_FILE)).unlink()
    with pytest.raises(ArtifactError, match=f"{LABEL_MAP_FILE}"):
        mlflow.pyfunc.load_model(local)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_pyfunc_predict_accepts_paths_bytes_and_arrays(registry, tmp_path):
    import mlflow.pyfunc

    from pipeline.registry.registry import using_tracking_uri

    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)  # not square: exercises resize + pad + mapping back
    path = tmp_path / "img.png"
    path.write_bytes(_png(array))
    with using_tracking_uri(registry.uri):
        model = mlflow.pyfunc.load_model(f"models:/{registry.name}@champion")
    by_path = model.predict(pd.DataFrame({"path": [str(path)], "image_id": [7]}))
    by_bytes = model.predict(pd.DataFrame({"image": [_png(array)], "image_id": [7]}))
    by_array = model.unwrap_python_model().predict(None, [array])
    assert list(by_path.columns) == ["image_id", "box", "score", "label", "category_id"]
    assert len(by_path) > 0 and (by_path["image_id"] == 7).all()
    pd.testing.assert_frame_equal(by_path, by_bytes)
    np.testing.assert_allclose(np.stack(by_array["box"]), np.stack(by_path["box"]), atol=1e-4)
    boxes = np.stack(by_path["box"])
    assert boxes[:, 2].max() <= 160 and boxes[:, 3].max() <= 96  # original coordinates, not model input (128)
    assert set(by_path["label"]) <= {"circle", "square", "triangle"}


def test_pyfunc_input_errors_name_the_row(registry, tmp_path, make_model, label_map):
    from pipeline.registry.package import ModelPackage
    from pipeline.registry.pyfunc_model import parse_model_input

    with pytest.raises(ImageInputError, match="row 0: give exactly one of"):
        parse_model_input(pd.DataFrame({"image": [b"x"], "path": ["a.png"]}))
    with pytest.raises(ImageInputError, match=r"unknown input column\(s\) \['url'\]"):
        parse_model_input(pd.DataFrame({"url": ["http://x"]}))
    detector = Detector(ModelPackage(make_model(0), label_map, __import__("effdet_core").PostprocessConfig()))
    with pytest.raises(ImageInputError, match=r"image 1: file '.*nope.png' does not exist"):
        detector.predict([np.zeros((8, 8, 3), np.uint8), str(tmp_path / "nope.png")])
    with pytest.raises(ImageInputError, match="image 0: cannot decode 4 encoded bytes"):
        detector.predict([b"junk"])
    with pytest.raises(ImageInputError, match=r"uint8 \[h, w, 3\] RGB, got float32"):
        detector.predict([np.zeros((8, 8, 3), np.float32)])


def test_dataset_fingerprint_tracks_content_not_formatting(dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    original = dataset_fingerprint(copy)
    assert original == dataset_fingerprint(dataset) and len(original) == 16
    ann = copy / "annotations" / "val.json"
    data = json.loads(ann.read_text())
    ann.write_text(json.dumps(data, indent=4))  # formatting only
    assert dataset_fingerprint(copy) == original
    assert dataset_fingerprint(copy, "train") != original
    first = copy / "images" / data["images"][0]["file_name"]
    first.write_bytes(first.read_bytes() + b"\x00")  # an image file changed size
    assert dataset_fingerprint(copy) != original
    data["annotations"][0]["bbox"][0] += 1  # a box moved
    ann.write_text(json.dumps(data))
    changed = dataset_fingerprint(copy)
    first.unlink()
    with pytest.raises(DatasetError, match=f"image file {first} listed in the annotations does not exist"):
        dataset_fingerprint(copy)
    assert changed != original
