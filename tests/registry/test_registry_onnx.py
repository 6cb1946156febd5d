"""`registry export NAME@ALIAS --format onnx`: a dynamic-batch graph whose outputs match PyTorch's, and an
export check that fails loudly when they do not."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pipeline.cli import main
from pipeline.registry import ExportError, load_detector
from pipeline.registry.export import DecodedOutputs, verify_onnx


def test_export_matches_pytorch_with_a_dynamic_batch(registry, tmp_path, capsys, make_model):
    out = tmp_path / "model.onnx"
    assert (
        main(
            [
                "registry",
                "export",
                f"{registry.name}@champion",
                "--format",
                "onnx",
                "--out",
                str(out),
                "--tracking-uri",
                registry.uri,
            ]
        )
        == 0
    )
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
    graph = onnx.load(str(out))
    onnx.checker.check_model(graph)
    batch_dim = graph.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic, not a fixed batch size
    detector, _ = load_detector(registry.uri, f"{registry.name}@champion")
    reference = DecodedOutputs(detector.package.model).eval()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images = torch.randn(4, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    boxes, scores = session.run(["boxes", "scores"], {"images": images.numpy()})
    with torch.no_grad():
        want_boxes, want_scores = reference(images)
    num_anchors = 9 * sum((128 // 2**level) ** 2 for level in range(3, 8))
    assert boxes.shape == (4, num_anchors, 4) and scores.shape == (4, num_anchors, 3)
    np.testing.assert_allclose(boxes, want_boxes.numpy(), atol=1e-2, rtol=1e-3)  # px
    np.testing.assert_allclose(scores, want_scores.numpy(), atol=1e-5)
    # the same file checked against a different network must be refused, and removed
    with pytest.raises(ExportError, match="deviates from PyTorch"):
        verify_onnx(out, DecodedOutputs(make_model(11)).eval(), (2,))
    assert not out.exists()
