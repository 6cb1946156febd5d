"""COCO evaluation of a registered model on a dataset directory, logged as its own MLflow run.

The model sees the same evaluation transform and coordinate mapping as validation during training, so the
numbers are comparable with the val_AP a version was registered with (when the dataset fingerprints match).
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from pipeline.data import (
    DatasetError,
    DetectionDataset,
    LabelMap,
    annotation_path,
    collate_fn,
    load_coco,
    storage,
)
from pipeline.registry.predict import Detector

EVALUATION_EXPERIMENT = "model-evaluation"


def check_categories(dataset_dir: str | os.PathLike, split: str, label_map: LabelMap) -> None:
    """The dataset's categories must be the model's, id for id and name for name."""
    path = annotation_path(dataset_dir, split)
    if not storage.is_file(path):
        raise DatasetError(f"{path}: no annotations for split {split!r}")
    dataset_map = LabelMap.from_categories(load_coco(path).dataset.get("categories", []))
    if dataset_map != label_map:
        raise DatasetError(
            f"{path}: categories {dict(zip(dataset_map.category_ids, dataset_map.names, strict=True))} "
            f"differ from the model's label map "
            f"{dict(zip(label_map.category_ids, label_map.names, strict=True))}"
        )


@torch.no_grad()
def evaluate_detector(detector: Detector, dataset_dir: str | os.PathLike, split: str = "val") -> dict[str, Any]:
    """`pipeline.evaluation.evaluate_coco` metrics (AP, AP50, ..., per_class_AP) plus image count and time; on the
    full images, sliced and merged when the detector predicts by windows (`Detector.tiling`)."""
    from torch.utils.data import DataLoader

    from pipeline.evaluation import evaluate_coco
    from pipeline.training.evaluate import merge_windows, predict

    check_categories(dataset_dir, split, detector.label_map)
    dataset = DetectionDataset(
        dataset_dir,
        split,
        detector.transform,
        label_map=detector.label_map,
        tiling=detector.tiling,
        max_pixels=detector.max_image_pixels,
    )
    loader = DataLoader(dataset, batch_size=detector.batch_size, shuffle=False, collate_fn=collate_fn)

    start = time.perf_counter()
    predictions = predict(detector.predictor, loader, detector.device)
    seconds = time.perf_counter() - start
    per_pass = detector.package.postprocess.max_detections
    predictions, max_detections = merge_windows(predictions, detector.tiling, per_pass)  # sliced: one entry per image
    metrics = evaluate_coco(dataset.coco, predictions, detector.label_map, max_detections=max_detections)
    metrics["num_images"] = len(dataset.images)
    metrics["seconds_per_image"] = seconds / max(1, len(dataset.images))
    return metrics


def log_evaluation(
    tracking_uri: str,
    model_version: Any,
    metrics: dict[str, Any],
    dataset_dir: str | os.PathLike,
    split: str,
    fingerprint: str,
    experiment: str = EVALUATION_EXPERIMENT,
) -> str:
    """A new MLflow run holding the evaluation (params: model and data; metrics: the scalar ones); its id."""
    from pipeline import tracking

    params = {
        "model_name": model_version.name,
        "model_version": str(model_version.version),
        "data_dir": storage.absolute(dataset_dir),
        "split": split,
        "dataset_fingerprint": fingerprint,
        "registered_dataset_fingerprint": model_version.tags.get("dataset_fingerprint", ""),
    }
    scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    scalars |= {f"AP_{k}": float(v) for k, v in metrics.get("per_class_AP", {}).items()}
    name = f"eval-{model_version.name}-v{model_version.version}"
    handle = tracking.record_run(tracking_uri, experiment, name, {"pipeline.job": "evaluate"}, params, scalars)
    return handle.run_id
