"""Merging sliced detections: ours (inner-edge drop + class-wise NMS, `pipeline.evaluation.merge_tiles`) against
class-wise NMS alone, SAHI's greedy NMM (its default merge for sliced prediction, IOS 0.5) and weighted boxes fusion
(ensemble-boxes, IoU 0.55), all on the same model passes (every window + the whole image) of the same val images,
scored by COCO on the full images. Also times each merge. Run alone (2 cores).

    python benchmarks/bench_tile_merge.py CHECKPOINT DATASET_DIR [--max-images N]

CHECKPOINT: a training checkpoint of a tiled run (e.g. the `best_checkpoint` folder `bench_tiling.sh` leaves under
outputs/tiling/tiled/...). Needs the comparison's own packages (not project dependencies):
`uv pip install ensemble-boxes shapely tqdm requests && uv pip install --no-deps sahi` (without --no-deps, sahi
brings opencv-python, whose cv2 overwrites the opencv-python-headless that albumentations uses).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np

from effdet_core import PostprocessConfig
from pipeline.config import from_dict
from pipeline.data import DetectionDataset
from pipeline.data.dataset import read_rgb
from pipeline.evaluation import evaluate_coco, merge_tiles
from pipeline.registry.from_checkpoint import model_from_state
from pipeline.registry.package import ModelPackage
from pipeline.registry.predict import Detector
from pipeline.training.checkpoint import load_checkpoint


def by_image(passes: list[dict]) -> dict[int, list[dict]]:
    grouped = defaultdict(list)
    for p in passes:
        grouped[int(p["image_id"])].append(p)
    return grouped


def stacked(parts: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pass of one image: boxes [n, 4] source px, scores [n], labels [n]."""
    boxes = np.concatenate([np.asarray(p["boxes"], np.float32).reshape(-1, 4) for p in parts])
    scores = np.concatenate([np.asarray(p["scores"], np.float32).reshape(-1) for p in parts])
    labels = np.concatenate([np.asarray(p["labels"], np.int64).reshape(-1) for p in parts])
    return boxes, scores, labels


def prediction(image_id: int, boxes, scores, labels) -> dict:
    order = np.argsort(-np.asarray(scores), kind="stable")
    return {
        "image_id": image_id,
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4)[order],
        "scores": np.asarray(scores, np.float32)[order],
        "labels": np.asarray(labels, np.int64)[order],
    }


def sahi_greedy_nmm(passes: list[dict]) -> list[dict]:
    """SAHI's own postprocess (`GreedyNMMPostprocess`, class-wise, IOS 0.5: what `get_sliced_prediction` uses)."""
    from sahi.postprocess.combine import GreedyNMMPostprocess
    from sahi.prediction import ObjectPrediction

    merge = GreedyNMMPostprocess(match_threshold=0.5, match_metric="IOS", class_agnostic=False)
    out = []
    for image_id, parts in sorted(by_image(passes).items()):
        boxes, scores, labels = stacked(parts)
        height, width = int(boxes[:, 3].max()) + 1, int(boxes[:, 2].max()) + 1
        objects = [
            ObjectPrediction(bbox=b.tolist(), category_id=int(c), score=float(s), full_shape=[height, width])
            for b, s, c in zip(boxes, scores, labels, strict=True)
            if b[2] > b[0] and b[3] > b[1]
        ]
        merged = merge(objects)
        out.append(
            prediction(
                image_id,
                [o.bbox.to_xyxy() for o in merged],
                [o.score.value for o in merged],
                [o.category.id for o in merged],
            )
        )
    return out


def weighted_boxes_fusion(passes: list[dict], iou: float = 0.55) -> list[dict]:
    """ensemble-boxes' WBF over all passes as one list (several lists would divide scores by their count)."""
    from ensemble_boxes import weighted_boxes_fusion as wbf

    out = []
    for image_id, parts in sorted(by_image(passes).items()):
        boxes, scores, labels = stacked(parts)
        scale = np.float32([boxes[:, 2].max(), boxes[:, 3].max()] * 2)  # WBF works in [0, 1]
        fused, fused_scores, fused_labels = wbf([boxes / scale], [scores], [labels], iou_thr=iou, skip_box_thr=0.0)
        out.append(prediction(image_id, fused * scale, fused_scores, fused_labels.astype(np.int64)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("dataset")
    parser.add_argument("--max-images", type=int, default=None)
    args = parser.parse_args()

    state = load_checkpoint(args.checkpoint)
    model, label_map = model_from_state(state)
    config = from_dict(state.config)
    tiling = config.data.tiling_spec(model.config.image_size[0])
    assert tiling is not None, "a checkpoint of a tiled run is needed (data.tiling resolved to windows)"
    detector = Detector(ModelPackage(model.eval(), label_map, PostprocessConfig()), backend="torch", tiling=tiling)
    val = DetectionDataset(args.dataset, "val", None, label_map)
    records = val.images[: args.max_images]
    arrays = [read_rgb(r) for r in records]
    start = time.perf_counter()
    passes = detector.predict_passes(arrays, [r.image_id for r in records])
    print(f"{len(records)} val images, {len(passes)} passes ({tiling}) in {time.perf_counter() - start:.1f} s")

    merges = {
        "ours: inner-edge drop + class-wise NMS 0.5": lambda p: merge_tiles(p, tiling.overlap_px),
        "class-wise NMS 0.5 alone": lambda p: merge_tiles(p, 0),  # no box spans <= 0 px: nothing dropped
        "SAHI greedy NMM (IOS 0.5)": sahi_greedy_nmm,
        "WBF (ensemble-boxes, IoU 0.55)": weighted_boxes_fusion,
    }
    rows = {}
    for name, merge in merges.items():
        start = time.perf_counter()
        merged = merge(passes)
        seconds = time.perf_counter() - start
        per_image = max([100, *(len(p["scores"]) for p in merged)])
        metrics = evaluate_coco(
            val.coco, merged, label_map, image_ids=[r.image_id for r in records], max_detections=per_image
        )
        rows[name] = {"AP": metrics["AP"], "AP50": metrics["AP50"], "APs": metrics["APs"], "merge_s": seconds}
        print(
            f"{name:<44} AP {metrics['AP']:.4f}  AP50 {metrics['AP50']:.4f}  APs {metrics['APs']:.4f}  {seconds:.2f} s"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
