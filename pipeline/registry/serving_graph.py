"""The serving graph of a registration: exported (`pipeline.registry.export`), optimised offline, and kept only when
its detections match PyTorch's on real images (`compare_backends`; the figures become the version's `onnx_*`
tags). Run by `pipeline.registry.onnx_backend.OnnxPredictor`.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effdet_core import EfficientDet
from pipeline.data import DatasetError, annotation_path, load_coco, storage
from pipeline.data.layout import image_file, images_dir
from pipeline.data.synth import render_image
from pipeline.registry.errors import ArtifactError, ExportError, ImageInputError
from pipeline.registry.export import NetworkOutputs, export_onnx, verify_onnx
from pipeline.registry.onnx_backend import ONNX_FILE, onnxruntime_available, session_options
from pipeline.registry.predict import Detector, decode_image

MIN_MATCHED = 0.99  # share of PyTorch's detections ONNX Runtime must reproduce for its graph to be kept
# largest |class logit| difference a kept graph may show: float32 reordering gives ~1e-5, a wrong graph far more
MAX_LOGIT_DIFF = 1e-2


def build_serving_graph(model: EfficientDet, out_path: str | os.PathLike, opset: int = 18) -> Path:
    """Export the ``network`` graph of `model`, fold BatchNorm and constants offline (ORT basic level), check the
    result against PyTorch on random batches of 1 and 3, and write it to `out_path`. Raises ExportError (and
    leaves no file) when export or the check fails."""
    import onnxruntime as ort

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="effdet-onnx-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        export_onnx(model, raw, opset=opset, check_batch_sizes=(2,), graph="network")
        options = session_options(optimization="basic")
        options.optimized_model_filepath = str(out)  # written when the session is created
        ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
    verify_onnx(out, NetworkOutputs(model).eval(), (1, 3))  # removes `out` when it deviates
    return out


def count_ops(path: str | os.PathLike, op_type: str) -> int:
    import onnx

    return sum(node.op_type == op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


@dataclass(frozen=True)
class BackendParity:
    """Detections of the ONNX Runtime backend against PyTorch's on the same images (`compare_backends`)."""

    images: int
    detections: int  # PyTorch's, over all images
    matched: int  # of those, found by ONNX Runtime with the same label, box within box_px and score within 1e-3
    max_box_px: float  # largest box-corner difference over matched detections, original px
    max_score_diff: float
    max_logit_diff: float  # largest |class logit| difference over every anchor and class

    def tags(self, source: str) -> dict[str, str]:
        return {
            "onnx_parity_images": f"{self.images} ({source})",
            "onnx_parity_detections": f"{self.matched}/{self.detections}",
            "onnx_parity_max_box_px": f"{self.max_box_px:.3g}",
            "onnx_parity_max_score_diff": f"{self.max_score_diff:.3g}",
            "onnx_parity_max_logit_diff": f"{self.max_logit_diff:.3g}",
        }


def compare_backends(torch_detector, onnx_detector, images: Sequence[np.ndarray], box_px: float = 0.5) -> BackendParity:
    """Run both `pipeline.registry.Detector`s on `images` (uint8 [h, w, 3]) and match detections greedily by
    (image, label), then score order."""
    ids = list(range(len(images)))
    want = torch_detector.to_records(torch_detector.predict_arrays(images, ids))
    got = onnx_detector.to_records(onnx_detector.predict_arrays(images, ids))
    pool: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for det in got:
        pool.setdefault((det["image_id"], det["label"]), []).append(det)
    matched, worst_box, worst_score = 0, 0.0, 0.0
    for det in want:
        candidates = pool.get((det["image_id"], det["label"]), [])
        best = min(candidates, key=lambda c: _box_distance(c["box"], det["box"]), default=None)
        if best is None:
            continue
        box_diff, score_diff = _box_distance(best["box"], det["box"]), abs(best["score"] - det["score"])
        if box_diff <= box_px and score_diff <= 1e-3:
            matched += 1
            worst_box, worst_score = max(worst_box, box_diff), max(worst_score, score_diff)
            candidates.remove(best)
    batch = torch.stack([torch_detector.preprocess(image, 0)[0] for image in images])
    with torch.no_grad():
        torch_logits = torch_detector.predictor.network(batch.to(torch_detector.device))[0].cpu()
    onnx_logits = onnx_detector.predictor.network(batch)[0]
    logit_diff = float((torch_logits - onnx_logits).abs().max())
    return BackendParity(len(images), len(want), matched, worst_box, worst_score, logit_diff)


def _box_distance(a: Sequence[float], b: Sequence[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def parity_images(data_dir: str | os.PathLike | None, count: int = 8) -> tuple[list[np.ndarray], str]:
    """Up to `count` validation images of the dataset `data_dir` (local or in a bucket), or generated demo images
    when there is none to read; with a description for the version's tags."""

    if data_dir is not None:
        try:
            coco = load_coco(annotation_path(data_dir, "val"))
            files = [image_file(images_dir(data_dir), coco.imgs[i]["file_name"]) for i in sorted(coco.imgs)]
            locations = [location for location, inside in files if inside][:count]  # never outside images/
            images = [decode_image(storage.read_bytes(location)) for location in locations]
            if images:
                return images, f"val images of {storage.display_name(data_dir)}"
        except (DatasetError, ImageInputError, OSError, KeyError) as e:  # unreadable here: fall back, say why
            return _generated_images(count), f"generated demo images; val images unreadable: {str(e)[:200]}"
    return _generated_images(count), "generated demo images"


def _generated_images(count: int) -> list[np.ndarray]:

    rng = np.random.default_rng(0)
    return [np.asarray(render_image(rng, 256)[0].convert("RGB")) for _ in range(count)]


def prepare_serving_graph(package, out_dir: str | os.PathLike, images: Sequence[np.ndarray], source: str):
    """(graph path or None, version tags): build the serving graph of `package` (a `ModelPackage`) into
    `out_dir` and compare the backends' detections on `images`. The graph is kept only when ONNX Runtime finds
    at least `MIN_MATCHED` of PyTorch's detections (exact score ties can reorder NMS) with logits within tolerance;
    otherwise, or when export fails, there is no graph, the `onnx` tag says why, and the version serves with
    PyTorch."""
    import dataclasses

    if not onnxruntime_available():
        return None, {"onnx": "none: onnxruntime is not installed"}
    start = time.perf_counter()
    path = Path(out_dir) / ONNX_FILE
    try:
        build_serving_graph(package.model, path)
        seconds = time.perf_counter() - start
        torch_detector = Detector(package, backend="torch")
        onnx_detector = Detector(dataclasses.replace(package, onnx_path=path), backend="onnxruntime")
        parity = compare_backends(torch_detector, onnx_detector, images)
        batchnorms = count_ops(path, "BatchNormalization")
    except (ExportError, ArtifactError, ImportError, RuntimeError, ValueError) as e:
        path.unlink(missing_ok=True)
        return None, {"onnx": f"none: {type(e).__name__}: {str(e)[:400]}"}
    tags = {"onnx_export_s": f"{seconds:.1f}", **parity.tags(source), "onnx_batchnorm_nodes": str(batchnorms)}
    if parity.matched < MIN_MATCHED * parity.detections or parity.max_logit_diff > MAX_LOGIT_DIFF:
        path.unlink()
        return None, {**tags, "onnx": "none: detections differ from PyTorch's (see onnx_parity_*)"}
    return path, {**tags, "onnx": ONNX_FILE}
