"""ONNX export of a registered detector's network, checked against PyTorch with onnxruntime before it is kept.

Two graphs, both taking normalised images [batch, 3, H, W] (dynamic batch):
- ``decoded`` (`registry export`, for other runtimes): ``boxes`` [batch, N, 4] xyxy model-input px and
  ``scores`` [batch, N, num_classes] (sigmoid), N = anchors;
- ``network`` (stored in a registered version, run by `pipeline.registry.onnx_backend`): the raw head outputs
  ``class_logits`` [batch, N, num_classes] and ``box_codes`` [batch, N, 4], so ONNX Runtime replaces only the
  network and post-processing stays `effdet_core.postprocess`, the same code as the PyTorch backend.
NMS and the resize/pad preprocessing stay with the caller (see `pipeline.registry.predict.Detector`), because
ONNX NMS operators differ between runtimes.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from effdet_core import EfficientDet, generate_anchors
from effdet_core.box_coder import decode
from effdet_core.loss import flatten_outputs
from pipeline.registry.errors import ExportError

INPUT_NAME = "images"
# (atol, rtol) per output: boxes in input px (float32 reordering moves big decoded boxes by ~1e-3 px), scores
# are probabilities, logits and box codes are pre-activation values of order 1-10
TOLERANCES: dict[str, tuple[float, float]] = {
    "boxes": (1e-2, 1e-3),
    "scores": (1e-4, 1e-3),
    "class_logits": (1e-3, 1e-3),
    "box_codes": (1e-3, 1e-3),
}


class DecodedOutputs(nn.Module):
    """images [B,3,H,W] -> (boxes [B,N,4] xyxy input px, scores [B,N,C]): the network plus box decoding."""

    output_names = ("boxes", "scores")

    def __init__(self, model: EfficientDet):
        super().__init__()
        self.model = model
        # anchors for the fixed input size become a graph constant
        self.register_buffer("anchors", generate_anchors(model.config, model.config.image_size, torch.device("cpu")))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        class_outputs, box_outputs = self.model(images)
        boxes = decode(flatten_outputs(box_outputs, 4), self.anchors)  # [B, N, 4]
        scores = flatten_outputs(class_outputs, self.model.num_classes).sigmoid()  # [B, N, C]
        return boxes, scores


class NetworkOutputs(nn.Module):
    """images [B,3,H,W] -> (class_logits [B,N,C], box_codes [B,N,4]): the network's heads, flattened in anchor
    order (`effdet_core.loss.flatten_outputs`), as `effdet_core.postprocess` takes them."""

    output_names = ("class_logits", "box_codes")

    def __init__(self, model: EfficientDet):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        class_outputs, box_outputs = self.model(images)
        return flatten_outputs(class_outputs, self.model.num_classes), flatten_outputs(box_outputs, 4)


GRAPHS: dict[str, type[nn.Module]] = {"decoded": DecodedOutputs, "network": NetworkOutputs}


@dataclass(frozen=True)
class ExportReport:
    path: Path
    batch_sizes_checked: tuple[int, ...]
    max_abs_diff: dict[str, float]  # output name -> largest |onnx - torch| over the checks


def export_onnx(
    model: EfficientDet,
    out_path: str | os.PathLike,
    opset: int = 18,
    check_batch_sizes: tuple[int, ...] = (1, 3),
    tolerances: dict[str, tuple[float, float]] | None = None,
    graph: str = "decoded",
) -> ExportReport:
    """Export the `graph` kind (see the module docstring; dynamic batch axis), then `verify_onnx` against the
    same network in PyTorch."""
    try:
        import onnxruntime  # noqa: F401  (checked before the slow export)
        import onnxscript  # noqa: F401  (the torch.export-based exporter needs it)
    except ImportError as e:
        raise ExportError(
            f"ONNX export needs onnx, onnxscript and onnxruntime: pip install onnx onnxscript onnxruntime ({e})"
        ) from None
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if graph not in GRAPHS:
        raise ValueError(f"graph {graph!r}: choose one of {sorted(GRAPHS)}")
    wrapper = GRAPHS[graph](model.cpu()).eval()
    example = torch.randn(2, 3, *model.config.image_size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter chatter about deprecated torch internals
            torch.onnx.export(
                wrapper,
                (example,),
                str(out),
                dynamo=True,  # torch.export-based: the TorchScript exporter is deprecated
                opset_version=opset,
                external_data=False,
                input_names=[INPUT_NAME],
                output_names=list(wrapper.output_names),
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
                verbose=False,
            )
    except Exception as e:  # the exporter raises many types
        raise ExportError(f"ONNX export of {model.config.name!r} failed: {type(e).__name__}: {e}") from e
    return verify_onnx(out, wrapper, check_batch_sizes, tolerances)


def verify_onnx(
    path: str | os.PathLike,
    reference: nn.Module,
    batch_sizes: tuple[int, ...],
    tolerances: dict[str, tuple[float, float]] | None = None,
) -> ExportReport:
    """Run `path` with onnxruntime and `reference` (a `GRAPHS` module) on random batches of each size; raises
    ExportError and deletes the file when a shape differs or any value differs beyond atol + rtol * |ref|
    (`tolerances`: output name -> (atol, rtol), default TOLERANCES)."""
    tolerances = {**TOLERANCES, **(tolerances or {})}
    import onnxruntime as ort

    out = Path(path)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    image_size = reference.model.config.image_size
    generator = torch.Generator().manual_seed(0)
    names = reference.output_names
    worst = dict.fromkeys(names, 0.0)
    for batch in batch_sizes:
        images = torch.randn(batch, 3, *image_size, generator=generator)
        with torch.no_grad():
            expected = [t.numpy() for t in reference(images)]
        actual = session.run(list(names), {INPUT_NAME: images.numpy()})
        for name, got, want in zip(names, actual, expected, strict=True):
            atol, rtol = tolerances[name]
            problem = None
            if got.shape != want.shape:
                problem = f"has shape {got.shape} for batch {batch}, PyTorch gives {want.shape}"
            elif not np.allclose(got, want, atol=atol, rtol=rtol):
                problem = (
                    f"deviates from PyTorch for batch {batch}: max |diff| {np.abs(got - want).max():.3g} "
                    f"> atol {atol} + rtol {rtol} * |ref|"
                )
            if problem:
                out.unlink(missing_ok=True)  # never leave a wrong graph where a user would pick it up
                raise ExportError(f"{out}: ONNX output {name!r} {problem}; file removed")
            worst[name] = max(worst[name], float(np.abs(got - want).max()))
    return ExportReport(out, tuple(batch_sizes), worst)
