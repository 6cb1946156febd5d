"""Training's entry into the registry: rebuild the trained network from a checkpoint and register it.

`run_pipeline.py train --register NAME` calls `register_from_checkpoint` at the end of training.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from effdet_core import EfficientDet
from pipeline.config.tiling import resolve_tiling
from pipeline.data import LabelMap
from pipeline.registry.metadata import pick_metrics
from pipeline.registry.registry import Registration, register_model
from pipeline.training.checkpoint import CheckpointError, TrainState, load_checkpoint


def model_from_state(state: TrainState, weights: str = "best") -> tuple[EfficientDet, LabelMap]:
    """The network of a checkpoint with its evaluation weights: the best epoch's (default) or the last epoch's
    (EMA weights when training used EMA)."""
    from pipeline.config import from_dict

    state_dict = state.chosen(weights).weights
    try:
        model_config = from_dict({"model": state.config["model"]}).model  # validated like any config
        label_map = LabelMap.from_dict(state.label_map)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint of epoch {state.epoch}: unusable model config or label map: {e}") from None
    if model_config.needs_fit:  # training saves the fitted values: `auto` here means the file was not written by it
        raise CheckpointError(f"checkpoint of epoch {state.epoch}: its model config still has `auto` values")
    model = model_config.build(label_map.num_classes, pretrained=False)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit the configured model: {e}") from None
    return model.eval(), label_map


def register_from_checkpoint(
    checkpoint: str | os.PathLike | TrainState,
    name: str,
    tracking_uri: str,
    metrics: Mapping[str, float] | None,
    dataset_fingerprint: str,
    run_id: str | None = None,
    *,
    weights: str = "best",
    force: bool = False,
    measure_latency: bool = True,
    onnx: bool = True,
    data_dir: str | os.PathLike | None = None,
) -> Registration:
    """Register the model of a training checkpoint (a directory, its checkpoint.pt, or a TrainState) as a new
    version of `name`; `champion` moves to it only if its val_AP beats the champion's on the same dataset
    (`dataset_fingerprint`, see `pipeline.registry.dataset_fingerprint`) or with `force`.

    `metrics` are the validation metrics of those weights (None: taken from the checkpoint); `run_id` links
    the logged model to the training run. Everything is checked before the model is built or logged.
    `onnx`: also store the ONNX Runtime serving graph, compared with PyTorch on val images of `data_dir` (default:
    the checkpoint's `data.dir`).
    """
    from pipeline.tracking import check_tracking_store

    state = checkpoint if isinstance(checkpoint, TrainState) else load_checkpoint(checkpoint)
    chosen = state.chosen(weights)
    metrics = dict(metrics) if metrics is not None else chosen.metrics
    pick_metrics(metrics)  # val_AP / val_AP50 present
    if not dataset_fingerprint:
        raise ValueError("dataset_fingerprint is required: champion only moves between comparable evaluations")
    check_tracking_store(tracking_uri)
    model, label_map = model_from_state(state, weights)
    tiling = (state.config.get("data") or {}).get("tiling")
    windows = None if tiling in (None, "auto", "off") else resolve_tiling(tiling, model.config.image_size[0])
    return register_model(
        model,
        label_map,
        name,
        tracking_uri,
        metrics,
        dataset_fingerprint,
        run_id=run_id,
        force=force,
        extra_tags={"source_epoch": str(chosen.epoch)},
        tiling=windows,
        measure_latency=measure_latency,
        onnx=onnx,
        parity_data=data_dir if data_dir is not None else (state.config.get("data") or {}).get("dir"),
    )
