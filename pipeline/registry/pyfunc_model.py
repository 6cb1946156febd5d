"""The MLflow pyfunc flavour of a registered detector: images in, detections (one row each) out.

Logged as "models from code" (`pyfunc_entry.py` is the code MLflow stores): loading runs that file, which
imports this module from the installed package and rebuilds the network from `effdet_core` plus the
safetensors/JSON artifacts, so the logged model holds no pickle at all. Works the same in-process
(`mlflow.pyfunc.load_model`) and behind `mlflow models serve`.

Input (a DataFrame, one row per image; the signature's columns are all optional):
    image     binary   encoded image file bytes (over REST: base64, which MLflow decodes), or in-process a
                       uint8 [h, w, 3] RGB array
    path      string   an image file path (read where the model runs)
    image_id  long     id echoed in the output (default: the row number)
Each row holds exactly one of `image` / `path`. In-process, a list of paths / bytes / arrays works too.
Output: one row per detection: image_id, box [x1, y1, x2, y2] (original px), score, label (name), category_id.

Backend: ONNX Runtime when the version carries a serving graph, PyTorch otherwise; override with
`mlflow.pyfunc.load_model(uri, model_config={"backend": "torch"})` or, for `mlflow models serve`, the
environment variable EFFDET_BACKEND=torch|onnxruntime.

Slicing: a model trained on windows of large images (its package's `tiling`) predicts every image by those windows,
merged into one answer in the image's own pixels; `model_config={"slice": "off" | "auto" | "PX"}` or
EFFDET_SLICE overrides it.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from pipeline.config.tiling import slice_setting
from pipeline.registry.errors import ArtifactError, ImageInputError
from pipeline.registry.package import ARTIFACT_FILES, ONNX_ARTIFACT, load_package
from pipeline.registry.predict import Detector

ENTRY_FILE = Path(__file__).with_name("pyfunc_entry.py")
INPUT_COLUMNS = ("image", "path", "image_id")
OUTPUT_COLUMNS = ("image_id", "box", "score", "label", "category_id")
BACKEND_ENV = "EFFDET_BACKEND"
SLICE_ENV = "EFFDET_SLICE"
# the logged model_config: backend auto | onnxruntime | torch, threads 0 = ONNX Runtime's default, use_gpu,
# slice auto (the package's training windows) | off | PX
PYFUNC_SETTINGS: dict[str, Any] = {"backend": "auto", "threads": 0, "use_gpu": False, "slice": "auto"}


class EfficientDetPyfunc(mlflow.pyfunc.PythonModel):
    """`mlflow.pyfunc.PythonModel` around `pipeline.registry.predict.Detector`."""

    detector: Detector | None = None

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        missing = [key for key in ARTIFACT_FILES if key not in context.artifacts]
        if missing:
            raise ArtifactError(f"logged model lacks artifact(s) {missing}; it has {sorted(context.artifacts)}")
        files = {key: context.artifacts[key] for key in ARTIFACT_FILES}
        package = load_package(**files, onnx=context.artifacts.get(ONNX_ARTIFACT))
        model_config = getattr(context, "model_config", None) or {}
        backend, threads, use_gpu = pyfunc_settings(model_config)
        tiling = slice_setting(_slice_flag(model_config), package.tiling)
        self.detector = Detector(package, backend=backend, threads=threads, use_gpu=use_gpu, tiling=tiling)
        # one line in the server's log: which backend answers (`mlflow models serve` shows nothing else)
        windows = f"windows of {tiling.size} px, overlap {tiling.overlap}" if tiling else "whole images"
        print(f"EfficientDet pyfunc: backend {self.detector.backend}, {windows}", file=sys.stderr, flush=True)

    # MLflow reads predict's type hint as a schema; pd.DataFrame tells it "use the logged signature instead",
    # which is what enforcement hands us. Direct calls on the unwrapped model may also pass lists (see below).
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self.detector is None:
            raise RuntimeError("model not loaded: load it with mlflow.pyfunc.load_model")
        images, image_ids = parse_model_input(model_input)
        records = self.detector.predict(images, image_ids)
        return pd.DataFrame(records, columns=list(OUTPUT_COLUMNS))


def pyfunc_settings(model_config: dict[str, Any]) -> tuple[str | None, int | None, bool]:
    """(backend or None for the default, ONNX Runtime threads or None, use_gpu) from the load-time model_config
    over the logged one, then EFFDET_BACKEND; a bad value is refused naming its key."""
    settings = {**PYFUNC_SETTINGS, **model_config}
    backend = str(settings["backend"] or "auto")
    source = "model_config['backend']"
    if backend == "auto" and os.environ.get(BACKEND_ENV):
        backend, source = os.environ[BACKEND_ENV], BACKEND_ENV
    if backend not in ("auto", "onnxruntime", "torch"):
        raise ValueError(f"{source}={backend!r}: choose auto, onnxruntime or torch")
    try:
        threads = int(settings["threads"] or 0)
    except (TypeError, ValueError):
        value = settings["threads"]
        raise ValueError(f"model_config['threads']={value!r}: give a whole number (0 = default)") from None
    use_gpu = settings["use_gpu"]
    if isinstance(use_gpu, str):
        use_gpu = use_gpu.strip().lower() in ("1", "true", "yes")
    return (None if backend == "auto" else backend), (threads or None), bool(use_gpu)


def _slice_flag(model_config: dict[str, Any]) -> str:
    """model_config's `slice`; when it is auto, EFFDET_SLICE may override it (`mlflow models serve` has no flags)."""
    flag = str(model_config.get("slice") or "auto")
    if flag == "auto" and os.environ.get(SLICE_ENV):
        return os.environ[SLICE_ENV]
    return flag


def parse_model_input(model_input: Any) -> tuple[list[Any], list[int]]:
    """Whatever the caller sent -> (images, image ids); the error names the bad row and column."""
    if isinstance(model_input, dict):
        model_input = pd.DataFrame(model_input)
    if isinstance(model_input, str | bytes | bytearray | Path) or (
        isinstance(model_input, np.ndarray) and model_input.ndim in (2, 3) and model_input.dtype == np.uint8
    ):
        model_input = [model_input]  # a single image
    if isinstance(model_input, list | tuple) or (isinstance(model_input, np.ndarray) and model_input.ndim == 4):
        return list(model_input), list(range(len(model_input)))
    if not isinstance(model_input, pd.DataFrame):
        raise ImageInputError(
            f"expected a DataFrame with columns {list(INPUT_COLUMNS)} or a list of images, "
            f"got {type(model_input).__name__}"
        )
    unknown = sorted(set(model_input.columns) - set(INPUT_COLUMNS))
    if unknown:
        raise ImageInputError(f"unknown input column(s) {unknown}; valid columns: {list(INPUT_COLUMNS)}")
    images = []
    for row, record in enumerate(model_input.to_dict(orient="records")):
        image, path = _present(record.get("image")), _present(record.get("path"))
        if (image is None) == (path is None):
            raise ImageInputError(f"row {row}: give exactly one of 'image' (encoded bytes / array) or 'path'")
        if isinstance(image, str):
            raise ImageInputError(f"row {row}: column 'image' holds bytes or arrays, not text; put paths in 'path'")
        images.append(image if image is not None else path)
    if "image_id" in model_input.columns:
        image_ids = [int(i) for i in model_input["image_id"]]
    else:
        image_ids = list(range(len(images)))
    return images, image_ids


def _present(value: Any) -> Any:
    """None for a missing cell (None or NaN), the value otherwise."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value


def model_signature():
    """The pyfunc signature (all input columns optional, see the module docstring)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    inputs = Schema(
        [
            ColSpec("binary", "image", required=False),
            ColSpec("string", "path", required=False),
            ColSpec("long", "image_id", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec("long", "image_id"),
            ColSpec(Array("double"), "box"),
            ColSpec("double", "score"),
            ColSpec("string", "label"),
            ColSpec("long", "category_id"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(size: int = 64) -> pd.DataFrame:
    """One small PNG as encoded bytes: MLflow stores it (base64 in JSON) and replays it through serving."""
    from PIL import Image

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return pd.DataFrame({"image": [buffer.getvalue()], "image_id": [0]})
