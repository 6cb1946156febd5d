"""A model trained by windows keeps its windows in the registry (its package and its `tiling` tag): `predict`,
`evaluate` and the pyfunc (`mlflow models serve`) slice by them unless told otherwise, and answer in the images'
own pixels."""

from __future__ import annotations

import dataclasses
import io

import mlflow.pyfunc
import numpy as np
import pandas as pd
from PIL import Image

from pipeline.config.tiling import TilingSpec
from pipeline.registry.registry import using_tracking_uri


def test_the_versions_windows_travel_to_prediction_and_evaluation(make_state, dataset, tmp_path, monkeypatch):
    from pipeline.registry import dataset_fingerprint, load_detector, register_from_checkpoint
    from pipeline.registry.evaluate import evaluate_detector
    from pipeline.training.checkpoint import save_checkpoint

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    state = make_state(seed=4, ap=0.2)
    state = dataclasses.replace(state, config={**state.config, "data": {"tiling": {"size": 64, "overlap": 0.25}}})
    save_checkpoint(state, tmp_path / "checkpoint")
    fingerprint = dataset_fingerprint(dataset, "val")
    registration = register_from_checkpoint(
        tmp_path / "checkpoint", "tiled", uri, None, fingerprint, onnx=False, measure_latency=False
    )
    detector, version = load_detector(uri, registration.model_uri, backend="torch")
    assert version.tags["tiling"] == '{"size": 64, "overlap": 0.25}'
    assert detector.tiling == detector.package.tiling == TilingSpec(64, 0.25)
    assert load_detector(uri, registration.model_uri, backend="torch", slice="off")[0].tiling is None

    image = np.random.default_rng(0).integers(0, 255, (150, 200, 3), np.uint8)  # 4 x 3 windows + the whole pass
    sliced = detector.predict([image])
    boxes = np.asarray([d["box"] for d in sliced]).reshape(-1, 4)
    assert len(boxes) > 100  # more than one window's 100 detections: the windows were merged, not one kept
    assert boxes[:, 0].min() >= 0 and boxes[:, 2].max() <= 200 and boxes[:, 3].max() <= 150
    assert boxes[:, 2].max() > 128  # boxes from the right-hand windows, in the image's pixels

    metrics = evaluate_detector(detector, dataset)  # on the 128 px val images: each is one 64 px-window grid
    assert metrics["num_images"] == 2 and 0.0 <= metrics["AP"] <= 1.0

    # the pyfunc as MLflow loads it (and `mlflow models serve` runs it): the same sliced answer from the package
    with using_tracking_uri(uri):
        pyfunc = mlflow.pyfunc.load_model(registration.model_uri, model_config={"backend": "torch"})
        whole = mlflow.pyfunc.load_model(registration.model_uri, model_config={"backend": "torch", "slice": "off"})
    png = io.BytesIO()
    Image.fromarray(image).save(png, format="PNG")
    request = pd.DataFrame({"image": [png.getvalue()]})  # as a REST request arrives (base64 decoded by MLflow)
    served = pyfunc.predict(request)
    assert len(served) == len(sliced)
    np.testing.assert_allclose(np.stack(served["box"].to_numpy()), boxes, atol=1e-3)
    assert len(whole.predict(request)) <= 100  # one pass: at most the model's 100 detections
    monkeypatch.setenv("EFFDET_SLICE", "off")  # what `mlflow models serve` can be given
    with using_tracking_uri(uri):
        served_whole = mlflow.pyfunc.load_model(registration.model_uri, model_config={"backend": "torch"})
    assert served_whole.unwrap_python_model().detector.tiling is None
