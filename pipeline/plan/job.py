"""A training job resolved once, in the driver, before any training: paths made absolute, every input checked,
`auto` values fitted to the data, the schedule and the augmentation worked out.

`train` and each `tune` trial start from a `ResolvedJob`; `pipeline.plan.header` says what it will run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.config import PipelineConfig, replace
from pipeline.config.augment import AugmentOptions
from pipeline.data import storage
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
    fitted: tuple[str, ...] = ()  # each `auto` value fitted to the data: "key=value: why"
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
    from pipeline.data.analyze import UNCOVERED_WARNING, fit_auto
    from pipeline.training.device import ignored_on_cpu
    from pipeline.training.inputs import ensure_dataset

    config = absolute_paths(config)
    notes = ignored_on_cpu(config)
    model = config.model.resolve()  # bad model overrides fail here, not in a worker
    uri = tracking.resolve_tracking_uri(config.mlflow.tracking_uri)
    tracking.check_tracking_store(uri)
    ensure_dataset(config.data)
    data = config.data
    report = validate_dataset(data.dir, check_images=data.check_images, max_pixels=data.max_image_pixels)
    report.raise_if_fatal()
    config, choices, analysis = fit_auto(config)
    model = config.model.resolve()  # at the fitted size and levels: the divisibility is checked again
    nominal, jittered = analysis.nominal.covered, analysis.jittered.covered
    if 1 - jittered > UNCOVERED_WARNING:
        notes.append(
            f"warning: {1 - jittered:.0%} of the training boxes have no anchor at IoU >= 0.5 (each trains a single "
            f"force-matched anchor): `run_pipeline.py data analyze {config.data.dir}` shows them against the "
            "anchors, with advice (input size, anchor scale, a stride-4 level)"
        )
    if config.ray.elastic and 0 <= config.ray.max_failures < 2:
        notes.append(
            f"warning: elastic with ray.max_failures={config.ray.max_failures}: Ray Train counts a lost node as a "
            "failure, and a restart that first waits for the lost size (its view is up to 20 s old) as another; "
            "set ray.max_failures to 2 per loss the run should survive, or -1 (docs/SCALING.md, Elastic training)"
        )
    per_epoch = steps_per_epoch(
        report.num_images["train"], config.data.batch_size, config.ray.max_workers, config.train.grad_accum_steps
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
        fitted=tuple(choice.describe() for choice in choices),
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
