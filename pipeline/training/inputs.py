"""The training job's view of `pipeline.data`: the demo dataset when absent, and this rank's loaders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from pipeline.config import DataConfig, PipelineConfig


@dataclass
class Inputs:
    train_loader: DataLoader
    val_loader: DataLoader
    coco_gt: Any  # pycocotools COCO of the validation split
    label_map: dict[str, list]  # LabelMap.to_dict(): what checkpoints carry


def ensure_dataset(data: DataConfig) -> Path | str:
    """The dataset directory; the synthetic demo dataset is written there first if it is absent and allowed (never
    into a bucket)."""
    from pipeline.data import DatasetError, annotation_path, ensure_synthetic_dataset, storage, synth

    root = data.dir if storage.is_remote(data.dir) else Path(data.dir)
    if storage.is_file(annotation_path(root, "train")) and storage.is_file(annotation_path(root, "val")):
        return root
    if storage.is_remote(root) or not data.generate_if_missing:
        raise DatasetError(
            f"data.dir={data.dir!r}: no dataset there ({annotation_path(root, 'train')} missing); set "
            "data.generate_if_missing=true for the demo dataset or convert yours with `run_pipeline.py data`"
        )
    print(
        f"no dataset at {root}: writing the synthetic {data.synth_preset!r} dataset ({data.synth_images} images, "
        f"{data.synth_size} px; classes: {', '.join(synth.PRESETS[data.synth_preset].classes)})",
        flush=True,
    )
    return ensure_synthetic_dataset(
        root,
        num_images=data.synth_images,
        size=data.synth_size,
        val_fraction=data.synth_val_fraction,
        preset=data.synth_preset,
    )


def schedule_for(config: PipelineConfig, inputs: Inputs):
    """The run's `Schedule`, from the train sampler's steps per epoch (the same on every rank and at any world
    size)."""
    from pipeline.training.schedule import resolve_schedule

    steps = inputs.train_loader.sampler.layout.steps_per_epoch
    return resolve_schedule(config.train, config.optim, steps)


def model_normalisation(config: PipelineConfig) -> tuple[tuple[int, int], tuple, tuple]:
    """(image_size, mean, std) of the configured model, without building it."""
    model_cfg = config.model.resolve()
    return model_cfg.image_size, model_cfg.mean, model_cfg.std


def build_loaders(
    config: PipelineConfig,
    rank: int = 0,
    world_size: int = 1,
    validate: bool = True,
    settings=None,
    max_world: int | None = None,
) -> Inputs:
    """This rank's shard of train (shuffled, augmented) and val (each image once across ranks). An optimizer step
    takes `max_world` (default `world_size`) x train.grad_accum_steps micro-batches over all ranks: an elastic run
    keeps its largest size's global batch with fewer workers. `settings` (a `pipeline.training.device.DeviceSettings`)
    sets the loader processes and pinned memory; without, the config's values for a CPU in this process."""
    import torch

    from pipeline.data import build_dataloaders
    from pipeline.training.device import device_settings, worker_cpus

    data = config.data
    settings = settings or device_settings(config, torch.device("cpu"), world_size, worker_cpus(config, False))
    image_size, mean, std = model_normalisation(config)
    augment = data.augment_options()
    loaders = build_dataloaders(
        data.dir,
        image_size,
        batch_size=data.batch_size,
        mean=mean,
        std=std,
        augment=augment,
        rank=rank,
        world_size=world_size,
        chunks_per_step=(max_world or world_size) * config.train.grad_accum_steps,
        num_workers=settings.loader_workers,
        pin_memory=settings.pin_memory,
        prefetch_factor=data.prefetch_factor,
        val_batch_size=data.val_batch_size,
        seed=config.train.seed,
        validate=validate,
        cache_dir=data.cache_dir,
        engine=data.engine,
        ray_cpus_per_task=data.ray_cpus_per_task,
        tiling=data.tiling_spec(image_size[0]),
        max_image_pixels=data.max_image_pixels,
    )
    train_set = loaders.train.dataset
    return Inputs(loaders.train, loaders.val, loaders.val.dataset.coco, train_set.label_map.to_dict())
