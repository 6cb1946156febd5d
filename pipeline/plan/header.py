"""The run header: what a resolved job will run, on what, where and for how long (the full config is in
`--print-config` and MLflow)."""

from __future__ import annotations

import torch

from effdet_core import count_parameters, create_model
from pipeline.config.augment import AugmentOptions
from pipeline.data.anchor_fit import describe
from pipeline.plan.job import ResolvedJob
from pipeline.training.optim import scaled_lr


def header_lines(job: ResolvedJob, command: str = "train") -> list[str]:
    """The run header: what runs, on what, where, for how long (the full config: `--print-config` and MLflow)."""
    cfg, model = job.config, job.model

    with torch.device("meta"):  # shapes only: no memory, no weights read
        params = count_parameters(create_model(model, num_classes=len(job.label_map["names"]))) / 1e6
    names = job.label_map["names"]
    classes = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
    a, s = job.augment, job.schedule
    global_batch = cfg.data.batch_size * cfg.ray.max_workers * cfg.train.grad_accum_steps
    anchors = describe(model)
    ema = f"EMA {cfg.optim.ema_decay}" if cfg.optim.ema_decay else "no EMA"
    address = cfg.ray.cluster_address()  # where init_ray will connect
    where = cfg.ray.address or (f"RAY_ADDRESS={address}" if address else "a local Ray")
    lines = [
        f"{command}: {model.name} at {model.image_size[0]}x{model.image_size[1]} px, {params:.2f}M parameters, "
        f"backbone {model.backbone} ({cfg.model.pretrained_backbone or 'random init'})",
        f"data: {cfg.data.dir}: {job.images.get('train', 0)} train / {job.images.get('val', 0)} val images, "
        f"{job.boxes.get('train', 0)} / {job.boxes.get('val', 0)} boxes, {len(names)} classes ({classes})",
        f"augment: {_augment_summary(cfg.data.augment, a)}",
        f"anchors: scale {anchors['anchor_scale']}, ratios {anchors['anchor_ratios']}, P{anchors['min_level']}-"
        f"P{anchors['max_level']}: {job.coverage[0]:.0%} of the boxes have an anchor at IoU >= 0.5 "
        f"({job.coverage[1]:.0%} under scale jitter)",
        *(f"auto: {fitted}" for fitted in job.fitted),
        f"schedule: {s.describe()}",
        f"optimizer: {cfg.optim.name}, lr {scaled_lr(cfg.optim, global_batch):.3g} at a global batch of "
        f"{global_batch} ({cfg.ray.max_workers} workers x {cfg.data.batch_size}"
        f"{f' x {cfg.train.grad_accum_steps} accumulated' if cfg.train.grad_accum_steps > 1 else ''}), {ema}",
        f"ray: {cfg.ray.describe_workers()} workers x {cfg.ray.cpus_per_worker:g} CPU"
        f"{f' + {cfg.ray.gpus_per_worker:g} GPU' if cfg.ray.use_gpu else ''}"
        f" on {where}; checkpoints under {cfg.ray.storage_path}",
        f"mlflow: {job.tracking_uri} (experiment {cfg.mlflow.experiment}); outputs under {cfg.train.output_dir}",
    ]
    if cfg.ray.elastic:
        lines.insert(-1, elastic_line(cfg))
    return lines + [f"note: {n}" if not n.startswith("warning") else n for n in job.notes]


def _augment_summary(spec, a: AugmentOptions) -> str:
    name = spec if isinstance(spec, str) else "custom steps"
    parts = []
    if (a.scale_min, a.scale_max) != (1.0, 1.0):
        parts.append(f"scale {a.scale_min:.3g}-{a.scale_max:.3g}")
    for label, p in (("hflip", a.hflip_prob), ("vflip", a.vflip_prob), ("rotate90", a.rotate90_prob)):
        if p:
            parts.append(f"{label} {p:g}")
    if a.color_prob:
        parts.append(f"color {a.color_prob:g}")
    return f"{name} ({', '.join(parts) or 'resize only'})"


def elastic_line(cfg) -> str:
    """How an elastic run keeps its recipe at every size (docs/SCALING.md, "Elastic training")."""
    ray, batch = cfg.ray, cfg.data.batch_size
    chunks = ray.max_workers * cfg.train.grad_accum_steps
    sizes = ", ".join(
        f"{w}: {-(-chunks // w)}" + (f"/{chunks // w}" if chunks % w else "")
        for w in range(ray.min_workers, ray.max_workers + 1)
    )
    return (
        f"elastic: starts once {ray.min_workers} workers fit, grows to {ray.max_workers} when resources appear "
        f"(checked every {ray.elastic_resize_interval_s:g} s), goes on with fewer after a loss; each resize restarts "
        f"the group from the last checkpoint. The global batch stays {chunks} micro-batches of {batch}: micro-batches "
        f"per worker by world size {sizes} (where the world does not divide them, the first workers take one more "
        "and the losses are weighted so each step's gradient is the mean over all of them); lr, warm-up, schedule, "
        "EMA and steps are the same at every size"
    )
