"""The JSON a `POST /predict` answers, built from one image's merged prediction (no Ray here).

    {"model": {"name": "shapes", "version": "3", "alias": "champion"},
     "image": {"width": 640, "height": 480},
     "detections": [{"category_id": 1, "bbox": [x, y, w, h], "score": 0.91, "label": "circle",
                     "box": [x1, y1, x2, y2]}, ...],          # by decreasing score, the image's own pixels
     "batch": {"requests": 3},                                 # requests that shared this model call
     "time_ms": {"total": 41.2, "decode": 3.1}}

Each detection is a record of `predict`'s detections.json (COCO results: category_id, bbox, score) with the
label's name and the corner box added; a detections.json record also names its image_id, here one image per call.
"""

from __future__ import annotations

from typing import Any

from pipeline.evaluation.coco_eval import coco_result
from pipeline.serving.follow import Served
from pipeline.serving.requests import PredictParams


def prediction_response(
    served: Served,
    alias: str | None,
    shape: tuple[int, ...],
    prediction: dict[str, Any],
    params: PredictParams,
    requests_in_call: int,
) -> dict[str, Any]:
    records = [r for r in served.detector.to_records([prediction]) if r["score"] >= params.score_threshold]
    records.sort(key=lambda r: -r["score"])
    if params.max_detections is not None:
        records = records[: params.max_detections]
    detections = []
    for record in records:
        coco = coco_result(1, record["category_id"], record["box"], record["score"])
        detections.append(
            {
                "category_id": coco["category_id"],
                "bbox": coco["bbox"],
                "score": coco["score"],
                "label": record["label"],
                "box": record["box"],
            }
        )
    return {
        "model": {"name": served.name, "version": served.version, "alias": alias},
        "image": {"width": int(shape[1]), "height": int(shape[0])},
        "detections": detections,
        "batch": {"requests": requests_in_call},
    }
