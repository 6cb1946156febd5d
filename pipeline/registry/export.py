"""ONNX export of a registered detector's network, checked against PyTorch with onnxruntime before it is kept.

The graph takes normalised images [batch, 3, H, W] (dynamic batch) and returns the decoded boxes before NMS:
``boxes`` [batch, N, 4] xyxy model-input px and ``scores`` [batch, N, num_classes] (sigmoid), N = anchors.
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
OUTPUT_NAMES = ("boxes", "scores")


class DecodedOutputs(nn.Module):
    """images [B,3,H,W] -> (boxes [B,N,4] xyxy input px, scores [B,N,C]): the network plus box decoding."""

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


@dataclass(frozen=True)
class ExportReport:
    path: Path
    batch_sizes_checked: tuple[int, ...]
    max_abs_diff: dict[str, float]  # output name -> largest |onnx - torch| over the checks


def export_onnx(
    model: EfficientDet,
    out_path: str | os.PathLike,
    opset: int = 18,
    atol: float = 1e-3,
    rtol: float = 1e-3,
    check_batch_sizes: tuple[int, ...] = (1, 3),
) -> ExportReport:
    """Export, then run the file with onnxruntime on random batches of `check_batch_sizes` images and compare
    with PyTorch; raises ExportError (and removes the file) when any output differs beyond atol + rtol*|ref|."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ExportError(
            f"ONNX export needs onnx, onnxscript and onnxruntime: pip install onnx onnxscript onnxruntime ({e})"
        ) from None
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    wrapper = DecodedOutputs(model.cpu()).eval()
    example = torch.randn(2, 3, *model.config.image_size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter chatter about deprecated torch internals
            torch.onnx.export(
                wrapper,
                (example,),
                str(out),
                dynamo=True,
                opset_version=opset,
                external_data=False,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
                verbose=False,
            )
    except Exception as e:  # the exporter raises many types
        raise ExportError(f"ONNX export of {model.config.name!r} failed: {type(e).__name__}: {e}") from e
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    worst = dict.fromkeys(OUTPUT_NAMES, 0.0)
    for batch in check_batch_sizes:
        images = torch.randn(batch, 3, *model.config.image_size, generator=generator)
        with torch.no_grad():
            expected = [t.numpy() for t in wrapper(images)]
        actual = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images.numpy()})
        for name, got, want in zip(OUTPUT_NAMES, actual, expected, strict=True):
            if got.shape != want.shape:
                out.unlink(missing_ok=True)
                raise ExportError(
                    f"{out}: output {name!r} has shape {got.shape} for batch {batch}, PyTorch gives {want.shape}"
                )
            worst[name] = max(worst[name], float(np.abs(got - want).max()))
            if not np.allclose(got, want, atol=atol, rtol=rtol):
                out.unlink(missing_ok=True)
                raise ExportError(
                    f"{out}: ONNX output {name!r} deviates from PyTorch for batch {batch}: max |diff| "
                    f"{np.abs(got - want).max():.3g} > atol {atol} + rtol {rtol} * |ref|; file removed"
                )
    return ExportReport(out, tuple(check_batch_sizes), worst)
