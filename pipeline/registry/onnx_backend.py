"""ONNX Runtime as a registered detector's network: the serving graph stored in a version, and its predictor.

A registered version stores `model.onnx`: the ``network`` graph of `pipeline.registry.export` (images ->
class_logits [B, N, C], box_codes [B, N, 4], dynamic batch) after ONNX Runtime's basic offline optimisation,
which folds every BatchNormalization into the convolution before it and folds constants, yet stays a standard
ONNX graph that any execution provider runs. `OnnxPredictor` runs it and hands the outputs to
`effdet_core.postprocess`, the code the PyTorch backend runs, so the two backends differ only by the network's
float32 arithmetic; registration measures that difference on real images
(`pipeline.registry.serving_graph.compare_backends`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from effdet_core import AnchorCache, EfficientDetConfig, PostprocessConfig
from effdet_core.postprocess import postprocess
from pipeline.registry.errors import ArtifactError

ONNX_FILE = "model.onnx"
BACKENDS = ("onnxruntime", "torch")


def session_options(threads: int | None = None, optimization: str = "all"):
    """ORT session options: `threads` intra-op threads (None: ORT's default, one per physical core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options.graph_optimization_level = levels[optimization]
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def execution_providers(use_gpu: bool = False) -> list[str]:
    """CUDA first when asked for and this onnxruntime build has it (onnxruntime-gpu), CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = (["CUDAExecutionProvider"] if use_gpu else []) + ["CPUExecutionProvider"]
    return [p for p in wanted if p in available]


def onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def has_cuda_provider() -> bool:
    """This onnxruntime build has CUDA (onnxruntime-gpu); whether a GPU starts is known once a session runs."""
    if not onnxruntime_available():
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


class OnnxPredictor:
    """images [B,3,H,W] -> per image {"boxes" [k,4] xyxy input px, "scores" [k], "labels" [k]}: the stored graph
    in ONNX Runtime, then `effdet_core.postprocess`; a drop-in for `EfficientDetForPrediction`."""

    def __init__(
        self,
        path: str | os.PathLike,
        config: EfficientDetConfig,
        num_classes: int,
        postprocess_config: PostprocessConfig,
        threads: int | None = None,
        use_gpu: bool = False,
    ):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"ONNX graph {path} is missing")
        try:
            self.session = ort.InferenceSession(
                str(path), session_options(threads), providers=execution_providers(use_gpu)
            )
        except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
            raise ArtifactError(f"{path}: ONNX Runtime cannot load it: {e}") from None
        if use_gpu and "CUDAExecutionProvider" not in self.session.get_providers():
            raise ArtifactError(
                f"backend onnxruntime with a GPU: this onnxruntime runs {self.session.get_providers()} only "
                "(install onnxruntime-gpu with a CUDA it supports, or use the torch backend)"
            )
        outputs = [o.name for o in self.session.get_outputs()]
        if outputs != ["class_logits", "box_codes"]:
            raise ArtifactError(f"{path}: outputs {outputs}, a serving graph has ['class_logits', 'box_codes']")
        self.path, self.config, self.num_classes = path, config, num_classes
        self.postprocess_config = postprocess_config
        self.anchors = AnchorCache(config)
        self.device = torch.device("cpu")  # inputs and outputs live on the host; the provider moves them

    def network(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B,3,H,W] float32 -> (class_logits [B,N,C], box_codes [B,N,4]) as CPU tensors (no copy)."""
        logits, codes = self.session.run(None, {"images": np.ascontiguousarray(images.float().cpu().numpy())})
        return torch.from_numpy(logits), torch.from_numpy(codes)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        image_size = tuple(images.shape[-2:])
        logits, codes = self.network(images)
        anchors = self.anchors.get(image_size, logits.device)
        return postprocess(logits, codes, anchors, image_size, self.postprocess_config)

    def eval(self) -> OnnxPredictor:
        return self  # the graph has no train mode; here so callers can treat both backends alike
