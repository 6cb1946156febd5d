"""A version registered by an older release keeps loading and predicting the same detections.

`fixtures/registered_model/` was logged by the registry at commit 4827241, before the package layout changed
(`fixtures/build_registered_model.py`): its stored entry file imports `pipeline.registry.pyfunc_model`, its
artifacts are read by `pipeline.registry.package`. Loading goes through `mlflow.pyfunc.load_model`, exactly as
`load_detector` and `mlflow models serve` do.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "registered_model"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(FIXTURE / "model", tmp_path_factory.mktemp("old") / "model"))


def _images() -> pd.DataFrame:
    paths = sorted(str(p) for p in (FIXTURE / "images").iterdir())
    return pd.DataFrame({"path": paths, "image_id": [1, 2]})


def _assert_same_detections(rows: list[dict], expected: list[dict]) -> None:
    assert len(rows) == len(expected) > 0
    assert [(r["image_id"], r["label"], r["category_id"]) for r in rows] == [
        (e["image_id"], e["label"], e["category_id"]) for e in expected
    ]
    np.testing.assert_allclose([r["score"] for r in rows], [e["score"] for e in expected], atol=1e-5)
    np.testing.assert_allclose([r["box"] for r in rows], [e["box"] for e in expected], atol=1e-3)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_an_old_registered_version_predicts_as_it_did(model_dir: Path, backend: str):
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(model_dir), model_config={"backend": backend})
    assert model.unwrap_python_model().detector.backend == backend
    rows = json.loads(model.predict(_images()).to_json(orient="records"))
    _assert_same_detections(rows, EXPECTED[backend])


def test_an_old_package_loads_as_a_detector(model_dir: Path):
    from pipeline.registry import Detector, load_package_dir

    package = load_package_dir(model_dir / "artifacts")
    assert package.label_map.names == ("circle", "square", "triangle")
    rows = Detector(package, backend="torch").predict(list(_images()["path"]), image_ids=[1, 2])
    _assert_same_detections(rows, EXPECTED["torch"])
