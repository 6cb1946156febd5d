"""The moving parts of one training process (one DDP rank) and how they are built: model (SyncBN, channels-last,
compiled, wrapped), optimizer, schedule, gradient scaler and EMA, restored from a checkpoint on resume."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.config import PipelineConfig
from pipeline.training.budget import TimeBudget
from pipeline.training.checkpoint import BestEval, TrainState
from pipeline.training.device import DeviceSettings, device_settings, worker_cpus
from pipeline.training.distributed import rank_and_world
from pipeline.training.elastic import WorldHistory
from pipeline.training.ema import ModelEma
from pipeline.training.optim import build_optimizer, build_scheduler, scaled_lr
from pipeline.training.schedule import Schedule
from pipeline.training.stream import Position


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
    settings: DeviceSettings
    label_map: dict[str, list]
    schedule: Schedule
    best: BestEval | None
    position: Position
    last_progress: float = 0.0  # perf_counter() of the last progress callback (rank 0)
    last_checkpoint: float = 0.0  # perf_counter() of the last checkpoint (rank 0's decides for all)
    stop_after_period: bool = False  # a stop was requested on a period's last step: its end checkpoints first
    budget: TimeBudget | None = None  # train.minutes: plans `schedule` from the measured step rate
    world_history: WorldHistory | None = None  # a Ray run's worker counts (elastic resizes), saved in checkpoints

    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    @property
    def device(self) -> torch.device:
        return self.settings.device


def build_model(config: PipelineConfig, num_classes: int, pretrained: bool = True) -> nn.Module:
    """The bare EfficientDet of `config.model` (pretrained backbone unless `pretrained=False`, e.g. on resume)."""
    return config.model.build(num_classes, pretrained=pretrained)


def build_trainer(
    config: PipelineConfig,
    label_map: dict[str, list],
    schedule: Schedule,
    settings: DeviceSettings | torch.device,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    resume: TrainState | None = None,
    max_world: int | None = None,
) -> Trainer:
    """Model, optimizer, schedule, scaler and EMA on `settings.device` (a bare device: the config's settings for it,
    one process); `wrap` (e.g. DDP) is applied to the training module only. The learning rate is scaled to the
    global batch of `max_world` workers (default: this world; an elastic run's largest, kept at every size)."""
    from effdet_core import EfficientDetForTraining

    _, world = rank_and_world()
    if isinstance(settings, torch.device):
        settings = device_settings(config, settings, world, worker_cpus(config, in_ray=False))
    device = settings.device
    model = build_model(config, len(label_map["category_ids"]), pretrained=resume is None)
    if settings.sync_bn:  # BN statistics over the global batch
        from timm.layers import convert_sync_batchnorm

        # timm's, not torch's: torch's turns the backbone's BatchNormAct2d into a plain SyncBatchNorm and silently
        # drops its activation (the SyncBN test catches it)
        model = convert_sync_batchnorm(model)
    model.to(device)
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)  # the EMA copy below inherits it
    if resume is not None:
        model.load_state_dict(resume.model)
    ema = ModelEma(model, config.optim.ema_decay, config.optim.ema_warmup) if config.optim.ema_decay else None
    train_module: nn.Module = EfficientDetForTraining(model)
    if settings.compile_mode:
        train_module = torch.compile(train_module, mode=settings.compile_mode)
    if wrap is not None:
        train_module = wrap(train_module)
    global_batch = config.data.batch_size * (max_world or world) * config.train.grad_accum_steps
    lr = scaled_lr(config.optim, global_batch)
    optimizer = build_optimizer(model, config.optim, lr, fused=settings.fused_optimizer)
    built: list[Trainer] = []  # the lr follows the trainer's schedule, which a time budget replaces once measured
    scheduler = build_scheduler(optimizer, config.optim, lambda: built[0].schedule if built else schedule)
    scaler = torch.amp.GradScaler(device.type, enabled=settings.grad_scaler)
    trainer = Trainer(
        config, model, train_module, optimizer, scheduler, scaler, ema, settings, label_map, schedule, None, Position()
    )
    built.append(trainer)
    if resume is not None:
        _restore(trainer, resume)
    return trainer


def _restore(trainer: Trainer, state: TrainState) -> None:
    if state.schedule is not None and trainer.config.train.minutes is not None:
        trainer.schedule = Schedule(**state.schedule)  # a time budget's plan: the resumed run keeps it
    if trainer.ema is not None and state.ema is not None:
        trainer.ema.load_state_dict(state.ema)
    if state.optimizer is not None:
        trainer.optimizer.load_state_dict(state.optimizer)
    if state.scheduler is not None:
        trainer.scheduler.load_state_dict(state.scheduler)
    if state.scaler:
        trainer.scaler.load_state_dict(state.scaler)
    trainer.best = state.best
    if state.position:
        trainer.position = Position(**state.position)
    else:  # a checkpoint of the epoch-only format: it was taken at the end of epoch `state.epoch`
        trainer.position = Position(step=state.epoch * trainer.schedule.steps_per_epoch, epoch=state.epoch)
