"""Images -> detections with a registered model, in original image coordinates, and boxes drawn on images.

Preprocessing is the pipeline's evaluation transform (`pipeline.data.DetectionTransform(train=False)`: resize
the longest side to fit, pad bottom/right, normalise with model.config.mean/std), so a registered model sees
exactly what validation saw during training; boxes are mapped back with `pipeline.data.to_original_coordinates`.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import UnidentifiedImageError

from effdet_core import EfficientDetForPrediction, PostprocessConfig
from pipeline.config.tiling import TilingSpec
from pipeline.data import DetectionTransform, LabelMap, to_original_coordinates
from pipeline.data.decode import DEFAULT_MAX_IMAGE_PIXELS, ImageTooLarge, decode_rgb
from pipeline.data.tiling import crop_window, tile_windows
from pipeline.evaluation import merge_tiles
from pipeline.evaluation.coco_eval import coco_result
from pipeline.registry.errors import ArtifactError, ImageInputError
from pipeline.registry.onnx_backend import BACKENDS, OnnxPredictor, has_cuda_provider, onnxruntime_available
from pipeline.registry.package import ModelPackage

# An image: a file path, encoded file bytes (PNG, JPEG, ...), or a uint8 array [h, w, 3] RGB ([h, w] grey)
ImageInput = str | os.PathLike | bytes | bytearray | np.ndarray
Detection = dict[str, Any]  # {"image_id", "box" [x1,y1,x2,y2] original px, "score", "label", "category_id"}
Pass = tuple[torch.Tensor, dict[str, Any]]  # one model pass: normalised [3, H, W] and its target-like meta


def decode_image(image: ImageInput, index: int = 0, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Any accepted image form -> uint8 [h, w, 3] RGB (files and bytes through `pipeline.data.decode`: TIFF of 8 or
    16 bits included, an image past `max_pixels` refused from its header)."""
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or min(array.shape[:2]) < 1:
            raise ImageInputError(
                f"image {index}: arrays must be uint8 [h, w, 3] RGB, got {array.dtype} {list(image.shape)}"
            )
        return np.ascontiguousarray(array)
    if isinstance(image, bytes | bytearray):
        data, what = bytes(image), f"{len(image)} encoded bytes"
    elif isinstance(image, str | os.PathLike):
        path, what = Path(image), f"file {os.fspath(image)!r}"
        if not path.is_file():
            raise ImageInputError(f"image {index}: {what} does not exist")
        data = path.read_bytes()
    else:
        raise ImageInputError(f"image {index}: expected a path, bytes or uint8 array, got {type(image).__name__}")
    try:
        return decode_rgb(data, max_pixels=max_pixels)
    except ImageTooLarge as e:
        raise ImageInputError(f"image {index}: {what} refused: {e}") from None
    except UnidentifiedImageError:  # its message holds the repr of a buffer object: say it plainly
        raise ImageInputError(f"image {index}: cannot decode {what}: not an image format PIL reads") from None
    except Exception as e:  # PIL raises many types for undecodable data
        raise ImageInputError(f"image {index}: cannot decode {what}: {e}") from None


def default_backend(package: ModelPackage, use_gpu: bool = False) -> str:
    """ONNX Runtime where the version carries a serving graph and it can run where asked (installed; on a GPU
    only with onnxruntime-gpu's CUDA provider), PyTorch otherwise."""
    if package.onnx_path is None or not onnxruntime_available() or (use_gpu and not has_cuda_provider()):
        return "torch"
    return "onnxruntime"


@dataclass
class Detector:
    """A model package ready for inference: eval transform + network (PyTorch or ONNX Runtime) + NMS + label
    names. `backend` None picks `default_backend`; `threads` sets ONNX Runtime's intra-op threads (PyTorch uses
    the process's `torch.set_num_threads`). The PyTorch backend moves the package's network to its device, NHWC."""

    package: ModelPackage
    batch_size: int = 8
    backend: str | None = None
    threads: int | None = None
    use_gpu: bool = False
    tiling: TilingSpec | None = None  # sliced prediction: windows merged per image (`pipeline.data.tiling`)
    max_image_pixels: int = (
        DEFAULT_MAX_IMAGE_PIXELS  # larger images (or decompression bombs) are refused from the header
    )

    def __post_init__(self) -> None:
        config = self.package.config
        self.transform = DetectionTransform(config.image_size, mean=config.mean, std=config.std, train=False)
        self.backend = self.backend or default_backend(self.package, self.use_gpu)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r}: choose one of {list(BACKENDS)}")
        if self.backend == "torch":
            # NHWC weights: oneDNN and cuDNN then run every convolution NHWC (D0 512 px on 2 CPU threads: x0.84)
            model = self.package.model.to("cuda" if self.use_gpu else "cpu", memory_format=torch.channels_last)
            self.predictor = EfficientDetForPrediction(model, self.package.postprocess).eval()
        elif self.package.onnx_path is None:
            raise ArtifactError(
                "backend onnxruntime: this model version carries no ONNX graph (registered with onnx off, or its "
                "export failed: see the version's `onnx` tag); use the torch backend"
            )
        else:
            self.predictor = OnnxPredictor(
                self.package.onnx_path,
                config,
                self.package.model.num_classes,
                self.package.postprocess,
                threads=self.threads,
                use_gpu=self.use_gpu,
            )

    @property
    def label_map(self) -> LabelMap:
        return self.package.label_map

    @property
    def device(self) -> torch.device:
        """Where input batches go: the PyTorch model's device, the host for ONNX Runtime."""
        if isinstance(self.predictor, EfficientDetForPrediction):
            return next(self.predictor.parameters()).device
        return self.predictor.device

    def with_postprocess(self, postprocess: PostprocessConfig) -> Detector:
        """The same network (model or ONNX Runtime session, shared, not rebuilt), backend and transform with other
        post-processing (e.g. soft-NMS to evaluate)."""
        twin = copy.copy(self)
        twin.package = dataclasses.replace(self.package, postprocess=postprocess)
        twin.predictor = copy.copy(self.predictor)  # both predictors read `postprocess_config` at each call
        twin.predictor.postprocess_config = postprocess
        return twin

    def with_backend(self, backend: str | None) -> Detector:
        return dataclasses.replace(self, backend=backend)

    def with_tiling(self, tiling: TilingSpec | None) -> Detector:
        """The same network and backend, predicting by windows (None: whole images)."""
        twin = copy.copy(self)
        twin.tiling = tiling
        return twin

    def preprocess(self, image: np.ndarray, image_id: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """uint8 [h, w, 3] -> normalised [3, H, W] and the target-like dict `to_original_coordinates` reads."""
        tensor, _, _, scale = self.transform(image, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64))
        return tensor, {"image_id": int(image_id), "scale": float(scale), "orig_size": image.shape[:2]}

    def passes(self, images: Sequence[np.ndarray], image_ids: Sequence[int]) -> Iterator[Pass]:
        """(tensor [3, H, W], target) of every model pass, made lazily: whole images, or each image's windows and
        its whole-image pass (one window at a time in memory besides the decoded image)."""
        fill = tuple(round(255 * m) for m in self.transform.mean)
        for image, image_id in zip(images, image_ids, strict=True):
            if self.tiling is None:
                yield self.preprocess(image, image_id)
                continue
            height, width = image.shape[:2]
            windows = tile_windows(height, width, self.tiling)
            for window in windows:
                tensor, meta = self.preprocess(crop_window(image, window, self.tiling.size, fill), image_id)
                yield tensor, {**meta, "orig_size": (height, width), "window": window, "whole": False}
            if len(windows) > 1:  # objects larger than a window
                tensor, meta = self.preprocess(image, image_id)
                yield tensor, {**meta, "window": (0, 0, width, height), "whole": True}

    def pass_count(self, height: int, width: int) -> int:
        """Model passes an image of this size takes: 1 whole, or its windows plus the whole-image pass."""
        if self.tiling is None:
            return 1
        windows = len(tile_windows(height, width, self.tiling))
        return windows + 1 if windows > 1 else 1

    @torch.no_grad()
    def run_passes(self, passes: Sequence[Pass]) -> list[dict[str, Any]]:
        """The network and post-processing on prepared passes (any images', e.g. several requests' at once),
        `batch_size` at a time: one evaluation-format prediction per pass, in its image's pixels."""
        out: list[dict[str, Any]] = []
        for start in range(0, len(passes), self.batch_size):
            batch = passes[start : start + self.batch_size]
            tensors = torch.stack([t for t, _ in batch]).to(self.device)  # [B, 3, H, W]
            out.extend(to_original_coordinates(self.predictor(tensors), [meta for _, meta in batch]))
        return out

    def predict_passes(self, images: Sequence[np.ndarray], image_ids: Sequence[int]) -> list[dict[str, Any]]:
        """Evaluation-format predictions of every model pass, in the images' pixels: one per image, or sliced
        (`tiling`) one per window and whole-image pass, each with its `window` and `whole`, not yet merged."""
        out: list[dict[str, Any]] = []
        passes = self.passes(images, image_ids)
        while batch := list(itertools.islice(passes, self.batch_size)):
            out.extend(self.run_passes(batch))
        return out

    def merge(self, predictions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Pass predictions -> one per image: sliced, every window's detections merged
        (`pipeline.evaluation.merge_tiles`); whole images as they are."""
        return merge_tiles(predictions, self.tiling.overlap_px) if self.tiling is not None else predictions

    def predict_arrays(self, images: Sequence[np.ndarray], image_ids: Sequence[int]) -> list[dict[str, Any]]:
        """Evaluation-format predictions (`pipeline.evaluation.evaluate_coco` input), one per image; sliced
        (`tiling`): every window's detections in the image's pixels, merged (`pipeline.evaluation.merge_tiles`)."""
        return self.merge(self.predict_passes(images, image_ids))

    def predict(self, images: Sequence[ImageInput], image_ids: Sequence[int] | None = None) -> list[Detection]:
        """Detections of every image as flat records, sorted by image then decreasing score."""
        ids = list(range(len(images))) if image_ids is None else [int(i) for i in image_ids]
        if len(ids) != len(images):
            raise ValueError(f"{len(images)} images but {len(ids)} image ids")
        # all decoded before any inference
        arrays = [decode_image(image, k, self.max_image_pixels) for k, image in enumerate(images)]
        return self.to_records(self.predict_arrays(arrays, ids))

    def to_records(self, predictions: Sequence[dict[str, Any]]) -> list[Detection]:
        records = []
        for pred in predictions:
            for box, score, label in zip(
                pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist(), strict=True
            ):
                if box[2] <= box[0] or box[3] <= box[1]:
                    continue  # a box that lay wholly in the padding: clipped to the image it has no area
                records.append(
                    {
                        "image_id": int(pred["image_id"]),
                        "box": [float(v) for v in box],
                        "score": float(score),
                        "label": self.label_map.names[int(label)],
                        "category_id": self.label_map.label_to_category_id(int(label)),
                    }
                )
        return records


def to_coco_results(detections: Sequence[Detection]) -> list[dict[str, Any]]:
    """Flat detections -> COCO results format ``{"image_id", "category_id", "bbox" [x, y, w, h], "score"}``."""
    return [coco_result(d["image_id"], d["category_id"], d["box"], d["score"]) for d in detections]


def draw_detections(image: np.ndarray, detections: Sequence[Detection], out_path: str | os.PathLike) -> Path:
    """Write `image` with each detection's box and "label score" drawn on it."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    render_detections(image, detections).save(out)
    return out


def render_detections(image: np.ndarray, detections: Sequence[Detection]):
    """A PIL image of `image` with each detection's box and "label score" drawn on it."""
    from PIL import Image, ImageDraw

    palette = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]
    canvas = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    for det in detections:
        color = palette[det["category_id"] % len(palette)]
        x1, y1, x2, y2 = det["box"]
        draw.rectangle([x1, y1, x2, y2], outline=color, width=2)
        draw.text((x1 + 2, max(0.0, y1 - 11)), f"{det['label']} {det['score']:.2f}", fill=color)
    return canvas
