"""The plain-PyTorch training loop: one process, or one rank of a DDP group set up by someone else.

Nothing here imports Ray or MLflow. The Ray adapter (`pipeline.ray_train`) wraps the model and the loaders and
passes an `on_epoch_end` callback that reports; `fit` runs the same loop in a single process with local
checkpoints (the fastest way to test and debug it).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pipeline.config import PipelineConfig, to_dict
from pipeline.training.checkpoint import TrainState, load_checkpoint, save_checkpoint
from pipeline.training.ema import ModelEma
from pipeline.training.evaluate import evaluate
from pipeline.training.optim import build_optimizer, build_scheduler, clip_gradients, scaled_lr

BEST_METRIC = "val_AP"


class InjectedFault(RuntimeError):
    """Raised by the `train.fault_marker` test hook to simulate a crashed worker."""


@dataclass
class Trainer:
    """The moving parts of one training process (one DDP rank)."""

    config: PipelineConfig
    model: nn.Module  # the bare EfficientDet: what EMA tracks and checkpoints hold
    train_module: nn.Module  # EfficientDetForTraining(model), possibly DDP-wrapped
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: ModelEma | None
    device: torch.device
    label_map: dict[str, list]
    best: dict[str, Any]

    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def build_model(config: PipelineConfig, num_classes: int, pretrained: bool = True) -> nn.Module:
    """The bare EfficientDet of `config.model` (pretrained backbone unless `pretrained=False`, e.g. on resume)."""
    return config.model.build(num_classes, pretrained=pretrained)


def build_trainer(
    config: PipelineConfig,
    label_map: dict[str, list],
    steps_per_epoch: int,
    device: torch.device,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    resume: TrainState | None = None,
) -> Trainer:
    """Model, optimizer, schedule, scaler and EMA; `wrap` (e.g. DDP) is applied to the training module only."""
    from effdet_core import EfficientDetForTraining

    _, world = rank_and_world()
    model = build_model(config, len(label_map["category_ids"]), pretrained=resume is None)
    if config.train.sync_bn and device.type == "cuda" and world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # BN stats over the global batch on GPUs
    model.to(device)
    if resume is not None:
        model.load_state_dict(resume.model)
    ema = ModelEma(model, config.optim.ema_decay, config.optim.ema_warmup) if config.optim.ema_decay else None
    train_module: nn.Module = EfficientDetForTraining(model)
    if config.train.compile:
        train_module = torch.compile(train_module)
    if wrap is not None:
        train_module = wrap(train_module)
    global_batch = config.data.batch_size * world * config.train.grad_accum_steps
    optimizer = build_optimizer(model, config.optim, scaled_lr(config.optim, global_batch))
    optimizer_steps = max(1, steps_per_epoch // config.train.grad_accum_steps)
    scheduler = build_scheduler(optimizer, config.optim, optimizer_steps, config.train.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=config.train.amp == "fp16" and device.type == "cuda")
    trainer = Trainer(config, model, train_module, optimizer, scheduler, scaler, ema, device, label_map, best={})
    if resume is not None:
        _restore(trainer, resume)
    return trainer


def _restore(trainer: Trainer, state: TrainState) -> None:
    if trainer.ema is not None and state.ema is not None:
        trainer.ema.load_state_dict(state.ema)
    if state.optimizer is not None:
        trainer.optimizer.load_state_dict(state.optimizer)
    if state.scheduler is not None:
        trainer.scheduler.load_state_dict(state.scheduler)
    if state.scaler:
        trainer.scaler.load_state_dict(state.scaler)
    trainer.best = dict(state.best)


def _autocast(trainer: Trainer):
    amp = trainer.config.train.amp
    if amp == "none" or trainer.device.type != "cuda":  # CPU autocast is slower than fp32 for these convs
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _to_device(images: torch.Tensor, targets: list[dict], device: torch.device) -> tuple[torch.Tensor, list[dict]]:
    images = images.to(device, non_blocking=True)
    moved = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
    return images, moved


def _optimizer_step(trainer: Trainer) -> None:
    trainer.scaler.unscale_(trainer.optimizer)  # clip the true gradients, not the fp16-scaled ones
    clip_gradients(trainer.model, trainer.config.optim.clip_grad_norm)
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.scheduler.step()
    if trainer.ema is not None:
        trainer.ema.update(trainer.model)


def train_one_epoch(trainer: Trainer, loader, epoch: int) -> dict[str, float]:
    """One pass over this rank's shard; returns metrics averaged over all ranks' images."""
    trainer.train_module.train()
    accum = trainer.config.train.grad_accum_steps
    sums = torch.zeros(4, dtype=torch.float64)  # loss, class_loss, box_loss (image-weighted), images
    start = time.perf_counter()
    num_steps = len(loader)
    for step, (images, targets) in enumerate(loader, start=1):
        images, targets = _to_device(images, targets, trainer.device)
        sync_now = step % accum == 0 or step == num_steps
        # under DDP, skip the gradient all-reduce on accumulation micro-steps (forward and backward both inside)
        no_sync = getattr(trainer.train_module, "no_sync", None)
        with no_sync() if no_sync is not None and not sync_now else contextlib.nullcontext():
            with _autocast(trainer):
                losses = trainer.train_module(images, targets)
            loss = losses["loss"]
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                parts = {k: float(v.detach()) for k, v in losses.items()}
                raise FloatingPointError(f"non-finite loss at epoch {epoch}, step {step}/{num_steps}: {parts}")
            trainer.scaler.scale(loss / accum).backward()
        if sync_now:
            _optimizer_step(trainer)
        n = images.shape[0]
        sums += torch.tensor(
            [loss_value * n, float(losses["class_loss"].detach()) * n, float(losses["box_loss"].detach()) * n, n],
            dtype=torch.float64,
        )
    seconds = time.perf_counter() - start
    _all_reduce_sum(sums)
    seconds = _all_reduce_max(seconds)  # the epoch lasts as long as the slowest rank
    images_total = max(1.0, float(sums[3]))
    return {
        "train_loss": float(sums[0]) / images_total,
        "train_class_loss": float(sums[1]) / images_total,
        "train_box_loss": float(sums[2]) / images_total,
        "lr": trainer.optimizer.param_groups[0]["lr"],
        "train_images": images_total,  # over all ranks: shows every shard was trained on
        "images_per_s": images_total / max(seconds, 1e-9),
        "train_time_s": seconds,
    }


def _all_reduce_sum(values: torch.Tensor) -> None:
    if rank_and_world()[1] > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)  # gloo reduces CPU tensors; float64 avoids drift


def _all_reduce_max(value: float) -> float:
    if rank_and_world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t[0])


def maybe_inject_fault(config: PipelineConfig, epoch: int) -> None:
    """Test hook: rank 0 raises once at `fault_epoch`, leaving the marker file so a restarted run goes on."""
    marker = config.train.fault_marker
    if marker is None or epoch != config.train.fault_epoch or rank_and_world()[0] != 0:
        return
    path = Path(marker)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"fault injected at epoch {epoch}\n", encoding="utf-8")
    raise InjectedFault(f"injected fault at epoch {epoch} (marker {path})")


def update_best(trainer: Trainer, epoch: int, metrics: dict[str, float]) -> bool:
    """Keep a CPU copy of the eval weights of the best epoch so far (by val AP); True when this one is best."""
    value = metrics.get(BEST_METRIC)
    if value is None or (trainer.best and value <= trainer.best["value"]):
        return False
    weights = {k: v.detach().cpu().clone() for k, v in trainer.eval_model().state_dict().items()}
    trainer.best = {
        "epoch": epoch,
        "metric": BEST_METRIC,
        "value": float(value),
        "metrics": dict(metrics),
        "weights": weights,
    }
    return True


def make_state(trainer: Trainer, epoch: int, metrics: dict[str, float]) -> TrainState:
    """The checkpoint of the end of `epoch`."""
    return TrainState(
        epoch=epoch,
        model=trainer.model.state_dict(),
        config=to_dict(trainer.config),
        label_map=trainer.label_map,
        ema=trainer.ema.state_dict() if trainer.ema is not None else None,
        optimizer=trainer.optimizer.state_dict(),
        scheduler=trainer.scheduler.state_dict(),
        scaler=trainer.scaler.state_dict(),
        metrics=dict(metrics),
        best=dict(trainer.best),
    )


EpochCallback = Callable[[Trainer, int, dict[str, float]], None]


def run_epochs(
    trainer: Trainer, train_loader, val_loader, coco_gt, start_epoch: int, on_epoch_end: EpochCallback
) -> dict[str, float]:
    """Epochs `start_epoch..config.train.epochs` (1-based): train, evaluate, then `on_epoch_end`."""
    cfg = trainer.config.train
    metrics: dict[str, float] = {}
    for epoch in range(start_epoch, cfg.epochs + 1):
        maybe_inject_fault(trainer.config, epoch)
        for loader in (train_loader, val_loader):
            if hasattr(getattr(loader, "sampler", None), "set_epoch"):
                loader.sampler.set_epoch(epoch)  # a different shuffle per epoch under DistributedSampler
        metrics = {"epoch": epoch, **train_one_epoch(trainer, train_loader, epoch)}
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            start = time.perf_counter()
            metrics.update(evaluate(trainer.eval_model(), val_loader, coco_gt, trainer.label_map, trainer.device))
            metrics["eval_time_s"] = time.perf_counter() - start
        update_best(trainer, epoch, metrics)
        on_epoch_end(trainer, epoch, metrics)
    return metrics


def fit(
    config: PipelineConfig, checkpoint_dir: str | Path, resume: bool = False, on_epoch_end: EpochCallback | None = None
) -> TrainState:
    """Train in this one process; the state of every epoch is saved to `checkpoint_dir/last`.

    With `resume`, training continues at the epoch after the one saved there.
    """
    from pipeline.training.inputs import build_loaders, ensure_dataset

    ensure_dataset(config.data)
    data = build_loaders(config)
    last_dir = Path(checkpoint_dir) / "last"
    state = load_checkpoint(last_dir) if resume else None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    trainer = build_trainer(config, data.label_map, len(data.train_loader), device, resume=state)
    start_epoch = state.epoch + 1 if state is not None else 1

    def save_and_forward(trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        save_checkpoint(make_state(trainer, epoch, metrics), last_dir)
        if on_epoch_end is not None:
            on_epoch_end(trainer, epoch, metrics)

    run_epochs(trainer, data.train_loader, data.val_loader, data.coco_gt, start_epoch, save_and_forward)
    return load_checkpoint(last_dir)
