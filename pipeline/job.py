"""A training job resolved once, in the driver, before any training: paths made absolute, every input checked,
`auto` values fitted to the data, the schedule and the augmentation worked out; and the run header that says
what will run, on what, where and for how long.

`train` and each `tune` trial start from a `ResolvedJob`; nothing here imports Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.config import PipelineConfig, replace
from pipeline.data import storage
from pipeline.data.anchor_fit import describe
from pipeline.data.augment_spec import AugmentOptions
from pipeline.ray_runtime import cluster_address
from pipeline.training.schedule import Schedule, resolve_schedule, steps_per_epoch
from pipeline.uri import is_uri


@dataclass(frozen=True)
class ResolvedJob:
    config: PipelineConfig  # absolute paths; `auto` anchors replaced by fitted values
    model: Any  # effdet_core.EfficientDetConfig of `config.model`, resolved once
    tracking_uri: str
    label_map: dict[str, list]
    images: dict[str, int]  # split -> images
    boxes: dict[str, int]  # split -> annotations
    schedule: Schedule
    augment: AugmentOptions  # bounded for this dataset
    coverage: tuple[float, float]  # share of training boxes with an anchor at IoU >= 0.5: nominal, under jitter
    analysis: Any  # pipeline.data.analyze.Analysis of the training boxes (for the anchor plot)
    notes: tuple[str, ...]  # what the header must say besides the facts (ignored settings, warnings)
    datasets: tuple[tracking.DatasetSplit, ...] = ()  # each split by reference: source, fingerprint, sizes


def absolute_paths(config: PipelineConfig) -> PipelineConfig:
    """Workers chdir into a Ray session folder: every local path must be absolute before they see it."""
    checkpoints = config.ray.storage_path
    if not is_uri(checkpoints):
        checkpoints = str(Path(checkpoints).resolve())
    marker = config.train.fault_marker
    return replace(
        config,
        data={"dir": storage.absolute(config.data.dir)},
        ray={"storage_path": checkpoints},
        train={
            "output_dir": str(Path(config.train.output_dir).resolve()),
            "fault_marker": str(Path(marker).resolve()) if marker else None,
        },
    )


def resolve_job(config: PipelineConfig) -> ResolvedJob:
    """Everything that can fail on bad input, before any training: paths, model, tracking store, dataset; then the
    values fitted to the data (`auto` anchors), the schedule and the bounded augmentation."""
    from pipeline.data import load_label_map, validate_dataset
    from pipeline.data.analyze import UNCOVERED_WARNING, analyze, resolve_auto_anchors
    from pipeline.training.device import ignored_on_cpu
    from pipeline.training.inputs import ensure_dataset

    config = absolute_paths(config)
    notes = ignored_on_cpu(config)
    model = config.model.resolve()  # bad model overrides fail here, not in a worker
    uri = tracking.resolve_tracking_uri(config.mlflow.tracking_uri)
    tracking.check_tracking_store(uri)
    ensure_dataset(config.data)
    report = validate_dataset(config.data.dir, check_images=config.data.check_images)
    report.raise_if_fatal()
    analysis = analyze(config)
    if config.model.needs_fit:
        config = resolve_auto_anchors(config, analysis)
        model = config.model.resolve()
        notes.append(f"anchors fitted to the training boxes (auto): {describe(model)}")
        analysis = analysis.for_model(model)  # the same boxes against the fitted anchors
    nominal, jittered = analysis.nominal.covered, analysis.jittered.covered
    if 1 - jittered > UNCOVERED_WARNING:
        notes.append(
            f"warning: {1 - jittered:.0%} of the training boxes have no anchor at IoU >= 0.5 (each trains a single "
            f"force-matched anchor): `run_pipeline.py data analyze {config.data.dir}` shows them against the "
            "anchors, with advice (input size, anchor scale, a stride-4 level)"
        )
    per_epoch = steps_per_epoch(
        report.num_images["train"], config.data.batch_size, config.ray.num_workers, config.train.grad_accum_steps
    )
    return ResolvedJob(
        config=config,
        model=model,
        tracking_uri=uri,
        label_map=load_label_map(config.data.dir).to_dict(),
        images=dict(report.num_images),
        boxes=dict(report.num_annotations),
        schedule=resolve_schedule(config.train, config.optim, per_epoch),
        augment=analysis.augment,
        coverage=(nominal, jittered),
        analysis=analysis,
        notes=tuple(notes),
        datasets=dataset_splits(config.data.dir, report.num_images, report.num_annotations),
    )


def dataset_splits(
    dataset_dir: str, images: dict[str, int], boxes: dict[str, int]
) -> tuple[tracking.DatasetSplit, ...]:
    """The dataset's splits as MLflow dataset inputs (the digest reads each split's annotations and file sizes)."""
    from pipeline.data import dataset_fingerprint

    name = storage.display_name(dataset_dir)
    return tuple(
        tracking.DatasetSplit(
            name=f"{name}-{split}",
            split=split,
            source=dataset_dir,
            digest=dataset_fingerprint(dataset_dir, split),
            images=images.get(split, 0),
            annotations=boxes.get(split, 0),
        )
        for split in images
    )


def header_lines(job: ResolvedJob, command: str = "train") -> list[str]:
    """The run header: what runs, on what, where, for how long (the full config: `--print-config` and MLflow)."""
    import torch

    from effdet_core import count_parameters, create_model
    from pipeline.training.optim import scaled_lr

    cfg, model = job.config, job.model

    with torch.device("meta"):  # shapes only: no memory, no weights read
        params = count_parameters(create_model(model, num_classes=len(job.label_map["names"]))) / 1e6
    names = job.label_map["names"]
    classes = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
    a, s = job.augment, job.schedule
    global_batch = cfg.data.batch_size * cfg.ray.num_workers * cfg.train.grad_accum_steps
    anchors = describe(model)
    ema = f"EMA {cfg.optim.ema_decay}" if cfg.optim.ema_decay else "no EMA"
    address = cluster_address(cfg)  # where init_ray will connect
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
        f"schedule: {s.describe()}",
        f"optimizer: {cfg.optim.name}, lr {scaled_lr(cfg.optim, global_batch):.3g} at a global batch of "
        f"{global_batch} ({cfg.ray.num_workers} workers x {cfg.data.batch_size}"
        f"{f' x {cfg.train.grad_accum_steps} accumulated' if cfg.train.grad_accum_steps > 1 else ''}), {ema}",
        f"ray: {cfg.ray.num_workers} workers x {cfg.ray.cpus_per_worker:g} CPU"
        f"{f' + {cfg.ray.gpus_per_worker:g} GPU' if cfg.ray.use_gpu else ''}"
        f" on {where}; checkpoints under {cfg.ray.storage_path}",
        f"mlflow: {job.tracking_uri} (experiment {cfg.mlflow.experiment}); outputs under {cfg.train.output_dir}",
    ]
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
