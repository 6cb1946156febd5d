"""COCO evaluation: ground truth scores AP 1.0, results equal pycocotools called directly,
two DDP shards score like one, and a PR-curve PNG is written."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from PIL import Image
from pycocotools.cocoeval import COCOeval

from pipeline.data import LabelMap
from pipeline.data.coco_index import coco_from_dict
from pipeline.evaluation import evaluate_coco, merge_prediction_shards

CATEGORIES = [{"id": 7, "name": "bird"}, {"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}]
LABEL_MAP = LabelMap.from_categories(CATEGORIES)  # cat -> 0, dog -> 1, bird -> 2


def ground_truth():
    """8 images of 200x160 with small, medium and large boxes (multiples of 0.25 px), one crowd region."""
    rng = np.random.default_rng(5)
    images, annotations = [], []
    for image_id in range(1, 9):
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 200, "height": 160})
        for _ in range(rng.integers(1, 5)):
            w, h = (rng.choice([12, 40, 110]) + rng.integers(0, 8, 2)).tolist()
            x, y = rng.integers(0, 200 - w) + 0.25, rng.integers(0, 160 - h) + 0.5
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.choice([1, 3, 7])),
                    "bbox": [x, y, float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
    annotations.append(
        {"id": 999, "image_id": 3, "category_id": 1, "bbox": [0.0, 0.0, 50.0, 50.0], "area": 2500.0, "iscrowd": 1}
    )
    return coco_from_dict({"images": images, "annotations": annotations, "categories": CATEGORIES})


def gt_as_predictions(coco):
    predictions = []
    for image_id in coco.getImgIds():
        anns = [a for a in coco.imgToAnns[image_id] if not a["iscrowd"]]
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        predictions.append(
            {
                "image_id": image_id,
                "boxes": np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1),  # [n, 4] xyxy
                "scores": np.linspace(1.0, 0.5, len(anns)),
                "labels": np.array([LABEL_MAP.category_id_to_label(a["category_id"]) for a in anns], dtype=np.int64),
            }
        )
    return predictions


def perturbed_predictions(coco, seed=0):
    """Shifted boxes (quarter px steps), dropped boxes, wrong classes, false positives, random scores."""
    rng = np.random.default_rng(seed)
    predictions = []
    for p in gt_as_predictions(coco):
        boxes = p["boxes"] + rng.integers(-16, 17, p["boxes"].shape) * 0.25
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = np.where(rng.random(len(boxes)) < 0.2, rng.integers(0, 3, len(boxes)), p["labels"])
        extra = rng.integers(0, 150, (2, 2)) * 1.0
        boxes = np.concatenate([boxes, np.concatenate([extra, extra + 30], axis=1)])[rng.random(len(boxes) + 2) < 0.85]
        labels = np.concatenate([labels, [0, 2]])[: len(boxes)]
        predictions.append(
            {
                "image_id": p["image_id"],
                "boxes": boxes,
                "scores": rng.random(len(boxes)),
                "labels": labels.astype(np.int64),
            }
        )
    return predictions


def test_ground_truth_as_predictions_scores_one():
    coco = ground_truth()
    metrics = evaluate_coco(coco, gt_as_predictions(coco), LABEL_MAP)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
        assert metrics[key] == pytest.approx(1.0), key
    assert metrics["per_class_AP"] == {"cat": pytest.approx(1.0), "dog": pytest.approx(1.0), "bird": pytest.approx(1.0)}


def test_perturbed_predictions_equal_pycocotools_called_directly():
    coco = ground_truth()
    predictions = perturbed_predictions(coco)
    metrics = evaluate_coco(coco, predictions, LABEL_MAP)
    results = [  # the conversion written out independently: xyxy -> xywh, label -> category id
        {
            "image_id": p["image_id"],
            "category_id": [1, 3, 7][int(label)],
            "score": float(score),
            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
        }
        for p in predictions
        for b, score, label in zip(p["boxes"], p["scores"], p["labels"], strict=True)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    expected = dict(zip(["AP", "AP50", "AP75", "APs", "APm", "APl"], evaluator.stats[:6], strict=True))
    expected["AR100"] = evaluator.stats[8]
    assert {k: metrics[k] for k in expected} == expected
    assert 0.05 < metrics["AP"] < 0.9  # a real, imperfect score
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # [T, R, K] with K in category-id order 1, 3, 7
    for k, name in enumerate(["cat", "dog", "bird"]):
        assert metrics["per_class_AP"][name] == np.mean(precision[:, :, k][precision[:, :, k] > -1])


def test_two_shards_equal_one():
    coco = ground_truth()
    predictions = perturbed_predictions(coco, seed=1)
    whole = evaluate_coco(coco, predictions, LABEL_MAP)
    rank0, rank1 = predictions[0::2], predictions[1::2] + [predictions[0]]  # rank 1 padded like DistributedSampler
    merged = merge_prediction_shards([rank1, rank0])
    assert [p["image_id"] for p in merged] == sorted(p["image_id"] for p in predictions)
    assert evaluate_coco(coco, merged, LABEL_MAP) == whole


def test_images_without_predictions_count_as_misses():
    coco = ground_truth()
    full = evaluate_coco(coco, gt_as_predictions(coco), LABEL_MAP)
    half = evaluate_coco(coco, gt_as_predictions(coco)[:4], LABEL_MAP)
    assert half["AR100"] < full["AR100"] and half["AP"] < full["AP"]


def test_pr_curve_png_is_written(tmp_path):
    coco = ground_truth()
    path = tmp_path / "plots" / "pr.png"
    evaluate_coco(coco, perturbed_predictions(coco), LABEL_MAP, pr_curve_path=path)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300
        pixels = np.asarray(image.convert("L"))
    assert pixels.min() < 100  # something was drawn


def test_no_predictions_scores_zero_and_still_plots(tmp_path, check_plot):
    metrics = evaluate_coco(ground_truth(), [], LABEL_MAP, pr_curve_path=tmp_path / "pr.png")
    assert metrics["AP"] == 0.0 and metrics["per_class_AP"] == {"cat": 0.0, "dog": 0.0, "bird": 0.0}
    check_plot(tmp_path / "pr.png")


def test_bad_predictions_are_rejected():
    coco = ground_truth()
    predictions = gt_as_predictions(coco)
    with pytest.raises(ValueError, match=r"image ids \[42\]"):
        evaluate_coco(coco, [*predictions, {**predictions[0], "image_id": 42}], LABEL_MAP)
    with pytest.raises(ValueError, match="merge_prediction_shards"):
        evaluate_coco(coco, [*predictions, predictions[0]], LABEL_MAP)
    with pytest.raises(ValueError, match="image id 1: .* boxes, 0 scores"):
        evaluate_coco(coco, [{**predictions[0], "scores": np.zeros(0)}], LABEL_MAP)
    with pytest.raises(KeyError, match="label 3"):
        evaluate_coco(coco, [{**predictions[0], "labels": np.full(len(predictions[0]["labels"]), 3)}], LABEL_MAP)


def test_our_summary_equals_pycocotools_at_100_and_counts_more_detections_when_raised(tmp_path):
    """`summary_at_max_detections` is what COCOeval.summarize prints for 100 detections per image, bit for bit, and
    with `max_detections` raised it scores the detections past the 100th (an image with hundreds of objects)."""

    from pipeline.data import write_synthetic_dataset
    from pipeline.data.coco_index import load_coco
    from pipeline.evaluation import STAT_INDEX
    from pipeline.evaluation.coco_eval import summary_at_max_detections

    root = write_synthetic_dataset(tmp_path / "d", num_images=20, size=128, seed=3, preset="dense")
    gt = load_coco(root / "annotations" / "val.json")
    rng = np.random.default_rng(0)
    results = []
    for a in gt.dataset["annotations"]:
        x, y, w, h = np.asarray(a["bbox"]) + rng.normal(0, 1, 4)
        results.append({**a, "bbox": [x, y, max(1.0, w), max(1.0, h)], "score": float(rng.uniform())})
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(
            gt, gt.loadRes([{k: r[k] for k in ("image_id", "category_id", "bbox", "score")} for r in results]), "bbox"
        )
        evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    ours = summary_at_max_detections(evaluator)
    assert {k: ours[k] for k in STAT_INDEX} == {k: float(evaluator.stats[i]) for k, i in STAT_INDEX.items()}

    # one image with 150 true boxes, predicted exactly: COCO's 100 caps recall at 2/3, 200 finds them all
    image = {"id": 1, "file_name": "a.png", "width": 1000, "height": 1000}
    boxes = [[40 * (k % 25), 40 * (k // 25), 30, 30] for k in range(150)]
    anns = [
        {"id": k + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": 900, "iscrowd": 0}
        for k, b in enumerate(boxes)
    ]
    many = coco_from_dict({"images": [image], "annotations": anns, "categories": [{"id": 1, "name": "x"}]})
    xyxy = np.asarray([[x, y, x + w, y + h] for x, y, w, h in boxes], np.float32)
    prediction = {"image_id": 1, "boxes": xyxy, "scores": np.linspace(1, 0.5, 150), "labels": np.zeros(150, np.int64)}
    labels = LabelMap.from_categories([{"id": 1, "name": "x"}])
    capped = evaluate_coco(many, [prediction], labels)
    full = evaluate_coco(many, [prediction], labels, max_detections=200)
    assert capped["AR100"] == pytest.approx(100 / 150, abs=0.01) and full["AR100"] == pytest.approx(1.0)
