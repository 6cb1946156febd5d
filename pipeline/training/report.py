"""End of a training run, in one process: the best checkpoint, its COCO evaluation with the PR curve, the grid of
validation images with predicted and true boxes, and the per-epoch progress line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.config import PipelineConfig, replace
from pipeline.training.checkpoint import TrainState, save_checkpoint
from pipeline.training.trainer import build_model


@dataclass
class FinalReport:
    metrics: dict[str, float]  # COCO metrics of the best checkpoint (val_AP, val_AP50, ...)
    best_step: int  # optimizer step of the best evaluation
    best_epoch: float  # the same in epochs
    files: dict[str, Path] = field(default_factory=dict)  # name -> file: best checkpoint, PR curve, grid


def best_state(last: TrainState) -> TrainState:
    """A deployable checkpoint of the best evaluation: its eval (EMA) weights, no optimizer state."""
    chosen = last.chosen("best")
    epoch = int(chosen.metrics.get("epoch", chosen.epoch))
    return TrainState(
        epoch=epoch,
        model=chosen.weights,
        config=last.config,
        label_map=last.label_map,
        metrics=chosen.metrics,
        position={"step": int(chosen.metrics.get("step", 0)), "epoch": epoch, "batch": 0},
    )


def _to_uint8(images: torch.Tensor, mean, std) -> list[np.ndarray]:
    """Model-input tensors [B,3,H,W] back to displayable uint8 [H,W,3]."""
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    pixels = ((images * s + m).clamp(0, 1) * 255).round().to(torch.uint8)
    return [p.permute(1, 2, 0).numpy() for p in pixels]


@torch.no_grad()
def _grid(model, config: PipelineConfig, val_loader, label_names, path: Path) -> Path:
    from effdet_core import EfficientDetForPrediction
    from pipeline.evaluation.plots import detection_grid
    from pipeline.training.inputs import model_normalisation

    _, mean, std = model_normalisation(config)
    predictor = EfficientDetForPrediction(model).eval()
    images, preds, truths = [], [], []
    for batch, targets in val_loader:
        detections = predictor(batch)
        images.extend(_to_uint8(batch, mean, std))
        preds.extend({k: v.numpy() for k, v in d.items()} for d in detections)
        truths.extend({"boxes": t["boxes"].numpy(), "labels": t["labels"].numpy()} for t in targets)
        if len(images) >= config.mlflow.grid_images:
            break
    n = config.mlflow.grid_images
    return detection_grid(images[:n], preds[:n], truths[:n], label_names, path, config.mlflow.score_threshold)


def final_report(config: PipelineConfig, last: TrainState, out_dir: str | Path) -> FinalReport:
    """Save the best checkpoint and evaluate it on the whole validation set (single process, CPU is fine)."""
    from pipeline.training.evaluate import evaluate
    from pipeline.training.inputs import build_loaders

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    best = best_state(last)
    files = {"best_checkpoint": save_checkpoint(best, out / "best_checkpoint")}
    model = build_model(config, len(best.label_map["category_ids"]), pretrained=False)
    model.load_state_dict(best.model)
    model.eval()
    inputs = build_loaders(replace(config, data={"engine": "torch"}), validate=False)  # one pass, in the driver
    files["pr_curve"] = out / "pr_curve.png"
    metrics = evaluate(
        model,
        inputs.val_loader,
        inputs.coco_gt,
        best.label_map,
        torch.device("cpu"),
        pr_curve_path=str(files["pr_curve"]),
        postprocess=config.eval.postprocess(),
    )
    if config.mlflow.grid_images > 0:
        files["val_grid"] = _grid(model, config, inputs.val_loader, best.label_map["names"], out / "val_grid.png")
    best_step, best_epoch = int(best.metrics.get("step", 0)), float(best.metrics.get("epoch", best.epoch))
    return FinalReport(metrics=metrics, best_step=best_step, best_epoch=best_epoch, files=files)
