"""`data analyze`: a dataset's boxes against a model's anchors at the configured input size, with advice; and the
fitting of `model.anchor_scale: auto` / `model.anchor_ratios: auto` before training.

Everything is measured on the training split, at the model input: once at the nominal resize (what evaluation
sees) and once under the training scale jitter (what the assignment sees while learning).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from effdet_core import EfficientDetConfig
from pipeline.config import AUTO, PipelineConfig, replace
from pipeline.config.augment import AugmentOptions
from pipeline.data.anchor_fit import (
    AnchorStats,
    anchor_stats,
    coverage,
    describe,
    fit_anchor_scale,
    fit_aspect_ratios,
    jitter_scales,
    records_input_boxes,
)
from pipeline.data.auto_fit import Choice, fit_to_data, training_records
from pipeline.data.coco_index import load_split

UNCOVERED_WARNING = 0.10  # the training header warns above this share of boxes without an anchor at IoU >= 0.5
LEVEL_GAIN = 0.05  # an extra pyramid level is advised when it covers this many more boxes
TINY_PX = 8  # boxes this small at the input leave the smallest feature map about one cell


@dataclass
class Analysis:
    """The training boxes of one dataset against one model configuration."""

    dataset_dir: str
    model: EfficientDetConfig  # with the configured (or official) anchors; `auto` still unresolved
    num_images: int
    boxes: np.ndarray  # [n, 4] training boxes at the model input (nominal resize)
    train_boxes: np.ndarray  # [n, 4] the same under the training scale jitter
    augment: AugmentOptions  # the training augmentation, its scale jitter bounded for this dataset
    nominal: AnchorStats  # boxes at the nominal resize
    jittered: AnchorStats  # boxes under the training scale jitter
    fitted_scale: float
    scale_table: list  # anchor_fit.ScaleCandidate per candidate scale, under the training jitter
    fitted_ratios: tuple[float, ...] | None
    advice: list[str] = field(default_factory=list)

    @property
    def scale_range(self) -> tuple[float, float]:
        return self.augment.scale_min, self.augment.scale_max

    def coverage(self, model: EfficientDetConfig) -> tuple[float, float]:
        """(nominal, under training jitter) share of boxes with an anchor at IoU >= 0.5 under `model`."""
        return coverage(self.boxes, model), coverage(self.train_boxes, model)

    def for_model(self, model: EfficientDetConfig) -> Analysis:
        """The same boxes against another anchor configuration (the fitted one): no re-read, no re-fit."""
        other = dataclasses.replace(
            self, model=model, nominal=anchor_stats(self.boxes, model), jittered=anchor_stats(self.train_boxes, model)
        )
        other.advice = _advice(other, self.train_boxes)
        return other

    def fitted_config(self) -> EfficientDetConfig:
        from effdet_core.config import aspect_ratio_pairs

        changes: dict[str, Any] = {"anchor_scale": self.fitted_scale}
        if self.fitted_ratios is not None:
            changes["aspect_ratios"] = aspect_ratio_pairs(self.fitted_ratios)
        return self.model.replace(**changes)


def analyze(config: PipelineConfig, dataset_dir: str | None = None, records=None) -> Analysis:
    """Measure the training boxes of `dataset_dir` (default `config.data.dir`; or its train `records`, already read)
    against `config.model` (its input size, levels and augmentation fitted: `fit_auto`)."""
    from pipeline.data.loader import training_augmentation

    dataset_dir = dataset_dir or config.data.dir
    model = config.model.resolve()
    if records is None:
        _, _, records = load_split(dataset_dir, "train")
    boxes = records_input_boxes(records, model.image_size)
    augment = training_augmentation(config.data.augment_options(), records, model.image_size)
    train_boxes = jitter_scales(boxes, augment.scale_min, augment.scale_max)
    fitted_scale, table = fit_anchor_scale(train_boxes, model)
    # ratios are fitted at the scale training will use: the fitted one, or the configured one
    ratio_scale = fitted_scale if config.model.anchor_scale in (AUTO, None) else model.anchor_scale
    analysis = Analysis(
        dataset_dir=str(dataset_dir),
        model=model,
        num_images=len(records),
        boxes=boxes,
        train_boxes=train_boxes,
        augment=augment,
        nominal=anchor_stats(boxes, model),
        jittered=anchor_stats(train_boxes, model),
        fitted_scale=fitted_scale,
        scale_table=table,
        fitted_ratios=fit_aspect_ratios(train_boxes, model.replace(anchor_scale=ratio_scale)),
    )
    analysis.advice = _advice(analysis, train_boxes)
    return analysis


def _advice(a: Analysis, train_boxes: np.ndarray) -> list[str]:
    advice = []
    fitted = a.fitted_config()
    fitted_stats = anchor_stats(train_boxes, fitted)
    before, after = a.jittered.positives_per_level.sum(), fitted_stats.positives_per_level.sum()
    if fitted.anchor_scale != a.model.anchor_scale or a.fitted_ratios:
        ratios = f", model.anchor_ratios={list(a.fitted_ratios)}" if a.fitted_ratios else ""
        advice.append(
            f"anchors: model.anchor_scale={a.fitted_scale}{ratios} (or auto) gives {after:.1f} positive anchors per "
            f"box instead of {before:.1f} and covers {fitted_stats.covered:.1%} instead of {a.jittered.covered:.1%}"
        )
    sizes = a.nominal.box_sizes
    tiny = float((sizes < TINY_PX).mean()) if len(sizes) else 0.0
    if tiny > 0.10:
        height = a.model.image_size[0]
        needed = math.ceil(height * TINY_PX / max(float(np.quantile(sizes, 0.10)), 1e-3) / 128) * 128
        advice.append(
            f"input size: {tiny:.0%} of the boxes are under {TINY_PX} px at {height} px; model.image_size={needed} "
            f"would make 90% of them at least {TINY_PX} px (if the images are that large)"
        )
    lower = _level_option(fitted, fitted.min_level - 1, fitted.max_level)
    lower_stats = anchor_stats(train_boxes, lower) if lower is not None else None
    if lower_stats is not None and lower_stats.covered > fitted_stats.covered + LEVEL_GAIN:
        advice.append(
            f"levels: model.min_level={lower.min_level} (a stride-{2**lower.min_level} level) covers "
            f"{lower_stats.covered:.1%} of the boxes instead of {fitted_stats.covered:.1%}, with "
            f"{lower_stats.positives_per_level.sum():.1f} positives per box instead of {after:.1f} (the new level "
            "costs about 4x the compute of the largest feature map)"
        )
    top = fitted_stats.positives_per_level[-1]
    if fitted.max_level > fitted.min_level + 1 and top < 0.01:
        advice.append(
            f"levels: P{fitted.max_level} matches almost no box ({top:.3f} positives per box): "
            f"model.max_level={fitted.max_level - 1} saves its compute"
        )
    return advice or ["the anchors fit these boxes; nothing to change"]


def _level_option(config: EfficientDetConfig, min_level: int, max_level: int) -> EfficientDetConfig | None:
    try:
        return config.replace(min_level=min_level, max_level=max_level)
    except ValueError:  # the backbone has no such level, or the input size does not divide
        return None


def report_lines(a: Analysis) -> list[str]:
    """The printable report of `data analyze`."""
    sizes = a.nominal.box_sizes
    height, width = a.model.image_size
    pct = np.percentile(sizes, [5, 25, 50, 75, 95]) if len(sizes) else np.zeros(5)
    anchors = describe(a.model)
    lines = [
        f"{a.dataset_dir}: {a.num_images} training images, {len(sizes)} boxes, model {a.model.name} at "
        f"{height}x{width} px",
        "box size sqrt(w*h) at the model input, px: "
        + "  ".join(f"p{q} {v:.1f}" for q, v in zip((5, 25, 50, 75, 95), pct, strict=True)),
        "  " + ", ".join(f"{name} {share:.1%}" for name, share in _size_buckets(sizes)),
        f"anchors: scale {anchors['anchor_scale']}, ratios {anchors['anchor_ratios']}, {anchors['num_scales']} "
        f"scales per level, levels P{anchors['min_level']}-P{anchors['max_level']}",
        f"  no anchor at IoU >= 0.5 (force-matched only): {a.nominal.uncovered:.1%} of the boxes as evaluated, "
        f"{a.jittered.uncovered:.1%} under the training scale jitter {a.scale_range[0]:.3g}-{a.scale_range[1]:.3g}",
        "  positives per box by level (training jitter): "
        + "  ".join(
            f"P{level} {v:.2f}" for level, v in zip(a.jittered.levels, a.jittered.positives_per_level, strict=True)
        ),
        "  anchor sides by level, px: "
        + "  ".join(f"P{level} {lo:.0f}-{hi:.0f}" for level, (lo, hi) in a.nominal.anchor_sizes.items()),
        "anchor scale candidates (training jitter): scale covered positives/box",
        *_candidate_lines(a.scale_table),
        f"fitted (anchor_scale: auto): scale {a.fitted_scale}"
        + (f", ratios {list(a.fitted_ratios)}" if a.fitted_ratios else ", official ratios kept"),
        "advice:",
        *(f"  - {line}" for line in a.advice),
    ]
    return lines


def _candidate_lines(table: list) -> list[str]:
    cells = [f"{c.scale:g} {c.covered:.0%} {c.positives:.1f}" for c in table]
    return ["  " + "   ".join(cells[i : i + 5]) for i in range(0, len(cells), 5)]


def _size_buckets(sizes: np.ndarray) -> list[tuple[str, float]]:
    edges = [(0, 16, "under 16 px"), (16, 32, "16-32 px"), (32, 96, "32-96 px"), (96, np.inf, "96 px and over")]
    total = max(1, len(sizes))
    return [(name, float(((sizes >= lo) & (sizes < hi)).sum()) / total) for lo, hi, name in edges]


def fit_auto(config: PipelineConfig) -> tuple[PipelineConfig, list[Choice], Analysis]:
    """Every `auto` value fitted to the training boxes (input size, levels, augmentation, then anchors at that
    size), what was chosen and why, and the analysis of the boxes against the fitted model."""
    _, _, records = load_split(config.data.dir, "train")
    config, choices = fit_to_data(config, records)
    analysis = analyze(config, records=training_records(config, records))
    if config.model.needs_fit:  # the anchors
        fitted = resolve_auto_anchors(config, analysis)
        for key in ("anchor_scale", "anchor_ratios"):
            if getattr(config.model, key) == AUTO:
                value = getattr(fitted.model, key)
                choices.append(
                    Choice(
                        f"model.{key}", list(value) if isinstance(value, tuple) else value, _anchor_why(analysis, key)
                    )
                )
        config = fitted
        analysis = analysis.for_model(config.model.resolve())  # the same boxes against the fitted anchors
    return config, choices, analysis


def _anchor_why(a: Analysis, key: str) -> str:
    if key == "anchor_ratios":
        return (
            "the quantiles of the boxes' shapes cover more boxes"
            if a.fitted_ratios
            else "the official ones cover as many"
        )
    best = next(c for c in a.scale_table if c.scale == a.fitted_scale)
    return f"{best.positives:.1f} positive anchors per box, {best.covered:.0%} of the boxes covered under the jitter"


def resolve_auto_anchors(config: PipelineConfig, analysis: Analysis) -> PipelineConfig:
    """`config` with `auto` anchor settings replaced by the values `analysis` fitted to its training boxes
    (unchanged when nothing is `auto`)."""
    if not config.model.needs_fit:
        return config
    changes: dict[str, Any] = {}
    if config.model.anchor_scale == AUTO:
        changes["anchor_scale"] = analysis.fitted_scale
    if config.model.anchor_ratios == AUTO:
        official = [round(x / y, 3) for x, y in analysis.model.aspect_ratios]
        changes["anchor_ratios"] = list(analysis.fitted_ratios or official)
    return replace(config, model=changes)
