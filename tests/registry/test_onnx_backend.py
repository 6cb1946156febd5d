"""The ONNX Runtime backend: the serving graph a registration stores (BatchNorm folded, checked against PyTorch on
real images, the figures in tags), detections and COCO metrics equal to the PyTorch backend's, and the choice of
backend per version."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.registry import ArtifactError, load_detector
from pipeline.registry.serving_graph import count_ops


def _images(registry, count: int = 4) -> list[np.ndarray]:
    from pipeline.registry.predict import decode_image

    return [decode_image(p) for p in sorted((registry.dataset / "images").iterdir())[:count]]


def test_the_champion_carries_a_batchnorm_free_graph_checked_on_the_datasets_val_images(registry):
    detector, version = load_detector(registry.uri, f"{registry.name}@champion")
    assert detector.backend == "onnxruntime"  # the default where the version carries a graph
    tags = version.tags
    assert tags["onnx"] == "model.onnx" and tags["onnx_batchnorm_nodes"] == "0"
    assert count_ops(detector.package.onnx_path, "BatchNormalization") == 0
    assert count_ops(detector.package.onnx_path, "Conv") > 0
    matched, total = (int(n) for n in tags["onnx_parity_detections"].split("/"))
    assert total > 0 and matched == total
    assert tags["onnx_parity_images"].endswith("(val images of shapes)")
    assert float(tags["onnx_parity_max_logit_diff"]) < 1e-3 and float(tags["onnx_parity_max_box_px"]) < 0.5


def test_onnxruntime_detections_and_coco_metrics_equal_pytorchs(registry):
    from pipeline.registry.evaluate import evaluate_detector

    onnx, _ = load_detector(registry.uri, f"{registry.name}@champion", backend="onnxruntime", threads=1)
    torch_backend = onnx.with_backend("torch")
    assert torch_backend.backend == "torch"
    images = _images(registry)
    want = torch_backend.predict(images)
    got = onnx.predict(images)
    assert len(want) > 10 and len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert (a["image_id"], a["label"]) == (b["image_id"], b["label"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
        np.testing.assert_allclose(a["box"], b["box"], atol=1e-2)
    ours, theirs = evaluate_detector(onnx, registry.dataset), evaluate_detector(torch_backend, registry.dataset)
    for key in ("AP", "AP50", "AR100"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-4), key


def test_a_version_without_a_graph_serves_with_pytorch_and_refuses_onnxruntime_by_name(registry):
    detector, version = load_detector(registry.uri, f"{registry.name}/2")
    assert version.tags["onnx"] == "off" and detector.backend == "torch"
    with pytest.raises(ArtifactError, match="carries no ONNX graph"):
        load_detector(registry.uri, f"{registry.name}/2", backend="onnxruntime")


def test_a_failed_export_registers_the_version_without_a_graph_and_says_why(
    make_model, label_map, tmp_path, monkeypatch
):
    from pipeline.registry import ExportError, register_model, serving_graph

    def broken(model, out_path, opset=18):
        raise ExportError("the exporter met an unsupported operator")

    monkeypatch.setattr(serving_graph, "build_serving_graph", broken)
    metrics = {"val_AP": 0.01, "val_AP50": 0.02}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # its own store: the session's registry lists its models exactly
    registration = register_model(make_model(4), label_map, "no-graph", uri, metrics, "fp", measure_latency=False)
    detector, version = load_detector(uri, registration.model_uri)
    assert version.tags["onnx"] == "none: ExportError: the exporter met an unsupported operator"
    assert detector.backend == "torch" and detector.package.onnx_path is None


def test_the_pyfunc_backend_follows_model_config_then_the_environment_and_refuses_bad_values(registry, monkeypatch):
    import mlflow.pyfunc

    from pipeline.registry.pyfunc_model import BACKEND_ENV, pyfunc_settings
    from pipeline.registry.registry import using_tracking_uri

    uri = f"models:/{registry.name}@champion"
    with using_tracking_uri(registry.uri):
        chosen = mlflow.pyfunc.load_model(uri, model_config={"backend": "torch"}).unwrap_python_model().detector
        monkeypatch.setenv(BACKEND_ENV, "torch")  # what `EFFDET_BACKEND=torch mlflow models serve ...` sets
        from_env = mlflow.pyfunc.load_model(uri).unwrap_python_model().detector
    assert (chosen.backend, from_env.backend) == ("torch", "torch")
    assert pyfunc_settings({"backend": "auto", "threads": "2", "use_gpu": "false"}) == ("torch", 2, False)
    monkeypatch.setenv(BACKEND_ENV, "tensorrt")
    with pytest.raises(ValueError, match="EFFDET_BACKEND='tensorrt'"):
        pyfunc_settings({})
    monkeypatch.delenv(BACKEND_ENV)
    with pytest.raises(ValueError, match=r"model_config\['threads'\]='many'"):
        pyfunc_settings({"threads": "many"})
