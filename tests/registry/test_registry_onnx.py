"""`registry export NAME@ALIAS --format onnx`: a dynamic-batch graph whose outputs match PyTorch's, and an
export check that fails loudly when they do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pipeline.cli import main
from pipeline.registry import ExportError, load_detector
from pipeline.registry.export import DecodedOutputs, verify_onnx


def test_cli_export_has_a_dynamic_batch_matches_pytorch_and_decodes_with_the_fitted_anchors(
    registry, tmp_path, capsys, make_state
):
    """`registry export NAME@champion --format onnx` of a model whose anchors are not the variant's (a fitted
    scale, ratios, scales per level, levels): a symbolic batch axis, ONNX Runtime outputs as PyTorch's for a batch
    of 4, boxes decoded over exactly the fitted anchors (a default-anchor graph would place every box elsewhere),
    and the export's own check refusing, and removing, a graph that another network does not reproduce."""
    from effdet_core import generate_anchors
    from effdet_core.box_coder import decode
    from effdet_core.config import aspect_ratio_pairs
    from effdet_core.loss import flatten_outputs
    from pipeline.config import from_dict
    from pipeline.registry import register_from_checkpoint
    from pipeline.training.checkpoint import save_checkpoint

    anchors = {"anchor_scale": 1.682, "anchor_ratios": [0.25, 1.0, 4.0], "num_scales": 2, "max_level": 6}
    state = make_state(seed=5, ap=0.05)
    state.config["model"].update(anchors)  # the checkpoint's config dict, as training writes it (lists, not tuples)
    model_config = from_dict({"model": state.config["model"]}).model
    weights = {k: v.clone() for k, v in model_config.build(3, pretrained=False).state_dict().items()}
    state.model, state.best.weights = weights, weights
    save_checkpoint(state, tmp_path / "ckpt")
    register_from_checkpoint(  # without the serving graph: this test exports through `registry export`
        tmp_path / "ckpt", "anchors", registry.uri, None, registry.fingerprint, measure_latency=False, onnx=False
    )
    out = tmp_path / "model.onnx"
    command = ["registry", "export", "anchors@champion", "--format", "onnx", "--out", str(out)]
    assert main([*command, "--tracking-uri", registry.uri]) == 0
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
    graph = onnx.load(str(out))
    onnx.checker.check_model(graph)
    batch_dim = graph.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic, not a fixed batch size

    detector, _ = load_detector(registry.uri, "anchors@champion")
    config = detector.package.config
    assert (config.anchor_scale, config.num_scales, config.min_level, config.max_level) == (1.682, 2, 3, 6)
    assert config.aspect_ratios == aspect_ratio_pairs((0.25, 1.0, 4.0))
    reference = DecodedOutputs(detector.package.model).eval()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images = torch.randn(4, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    boxes, scores = session.run(["boxes", "scores"], {"images": images.numpy()})
    expected = generate_anchors(config, (128, 128))
    assert len(expected) == 6 * sum((128 // 2**level) ** 2 for level in range(3, 7))
    assert boxes.shape == (4, len(expected), 4) and scores.shape == (4, len(expected), 3)
    with torch.no_grad():
        want_boxes, want_scores = reference(images)
        _, box_outputs = detector.package.model(images)
    np.testing.assert_allclose(boxes, want_boxes.numpy(), atol=1e-2, rtol=1e-3)  # px
    np.testing.assert_allclose(scores, want_scores.numpy(), atol=1e-5)
    fitted = decode(flatten_outputs(box_outputs, 4), expected)  # decoded with the fitted anchors
    np.testing.assert_allclose(boxes, fitted.numpy(), atol=1e-2, rtol=1e-3)

    torch.manual_seed(11)  # the same architecture, other weights: the same file must be refused, and removed
    with pytest.raises(ExportError, match="deviates from PyTorch"):
        verify_onnx(out, DecodedOutputs(model_config.build(3, pretrained=False).eval()).eval(), (2,))
    assert not out.exists()


OFFICIAL = [
    ("d0", 256),  # a D-variant: BiFPN of 3 repeats at 64 channels, EfficientNet-B0 (256 px keeps the check short)
    ("lite0", 320),  # the official uneven sizes: 320 / 2**7 and 448 / 2**7 are not whole, P6/P7 are ceil-halved
    ("lite2", 448),
]


def _export_official(variant: str, size: int, out_dir: str):
    """In a worker process (one thread): the random-init model of `variant` at `size` exported and checked."""
    from effdet_core import create_model
    from pipeline.registry.export import export_onnx

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model(variant, num_classes=3, image_size=size).eval()
    # Random weights put box codes far outside a trained model's range, and exp() in the decoding turns the last
    # float32 bits of a deep backbone (ONNX Runtime's kernels vs PyTorch's, which differ by thread count) into a few
    # hundredths of a pixel (0.034 px measured for Lite2 at 448); a misplaced anchor costs a stride, 8 px or more.
    return export_onnx(model, Path(out_dir) / f"{variant}.onnx", tolerances={"boxes": (0.25, 1e-3)})


@pytest.fixture(scope="module")
def official_exports(tmp_path_factory):
    """The three exports started at once on two worker processes: torch.export's tracing runs on one core, so two
    of them fill this 2-core machine. (variant, size) -> the future of its ExportReport."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    out_dir = tmp_path_factory.mktemp("official")
    slowest_first = sorted(OFFICIAL, key=lambda vs: -vs[1])
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield {(v, s): pool.submit(_export_official, v, s, str(out_dir)) for v, s in slowest_first}


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "size"), OFFICIAL)
def test_official_variants_export_and_match_pytorch(variant, size, official_exports):
    """Each exports with a dynamic batch and its ONNX Runtime outputs match PyTorch's for batches of 1 and 3 (the
    export's own check, which raises otherwise), decoding over exactly the anchors of the uneven pyramid."""
    from effdet_core import generate_anchors
    from effdet_core.config import get_config

    report = official_exports[(variant, size)].result(timeout=600)
    assert report.batch_sizes_checked == (1, 3) and set(report.max_abs_diff) == {"boxes", "scores"}
    graph = onnx.load(str(report.path))
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    boxes, scores = session.run(["boxes", "scores"], {"images": np.zeros((2, 3, size, size), np.float32)})
    anchors = generate_anchors(get_config(variant, image_size=size), (size, size))
    assert boxes.shape == (2, len(anchors), 4) and scores.shape == (2, len(anchors), 3)
