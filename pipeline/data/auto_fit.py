"""`auto` settings fitted to the training boxes before training: the input size, the pyramid levels and the
augmentation (the anchors are fitted after them, by `pipeline.data.analyze`).

Each choice is a `Choice`: the config key, the value and why, for the run header; a value the user pinned is never
touched. The fitted values replace `auto` in the job's config, so the checkpoint, the registered model and its
ONNX graph carry them.

    tiling       windows at native resolution (the official input, overlapping by the 90th-percentile box side)
                 when the images are TILE_RATIO x the input or more and their median box, fitted whole, falls under
                 BUDGET_MEDIAN_PX, while natively it does not; the choices below then see the windows
    image_size   the size at which the median training box is TARGET_MEDIAN_PX and the small ones (10th percentile)
                 TARGET_SMALL_PX, in steps of 128, at most the smaller of 2x the images' own size and
                 `model.max_image_size` (default 2x the variant's official size), at least the official size (the
                 images' own when smaller): small boxes upsample, large ones keep the official downscale.
                 Under `train.minutes` the run is step-limited: the smallest size (from MIN_IMAGE_SIZE up to that
                 one) at which the median box is still BUDGET_MEDIAN_PX and the small ones BUDGET_SMALL_PX, since
                 every pixel more costs steps (dense set, 5 minutes on 2 CPUs: 256 px AP50 0.54 in 334 steps,
                 320 px 0.45 in 200, 384 px 0.08 in 64)
    min_level    one level lower (stride 4) when it gives an anchor at IoU >= 0.5 to LEVEL_GAIN more of the boxes;
                 one higher when the lowest level matches almost none
    max_level    top levels dropped while they match almost no box (fewer than EMPTY_LEVEL positives per box)
    augment      `aerial` (every flip and quarter turn) when the data is seen from above, else `default`; `view`
                 says which, or is judged from the boxes (`judge_view`)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from effdet_core import EfficientDetConfig
from pipeline.config import AUTO, PipelineConfig, replace
from pipeline.data.anchor_fit import anchor_stats, jitter_scales, records_input_boxes

# the median box within reach of a stride-4 level's anchors (Lite: 12-19 px), the small ones (10th percentile)
# at least covered by them (IoU >= 0.5 needs 0.7x the anchor side). A stride-4 level costs less than a larger input
# (Lite0 on one CPU thread, a step of 4 images with 60 boxes each: 256 px P3-P7 0.50 s, P2-P4 0.63 s; 384 px P3-P7
# 1.02 s, P2-P4 1.32 s)
TARGET_MEDIAN_PX = 16.0
TARGET_SMALL_PX = 8.0
SIZE_STEP = 128  # sizes divisible by 2**7, whatever the levels
MIN_IMAGE_SIZE = 256
# under a time budget: the median box twice the stride-4 level's step, the small ones one step (smaller than a
# feature cell, a box has no location of its own)
BUDGET_MEDIAN_PX = 8.0
BUDGET_SMALL_PX = 4.0
LEVEL_GAIN = 0.05  # a stride-4 level is added when it covers this many more boxes (as `data analyze` advises)
EMPTY_LEVEL = 0.01  # a level with fewer positive anchors per box than this matches almost none
TILE_RATIO = 2.0  # images at least this many input sides long may be tiled
MIN_VIEW_BOXES = 100  # fewer boxes than this are too few to judge the view from


@dataclass(frozen=True)
class Choice:
    """One `auto` value fitted to the data, and why (a line of the run header)."""

    key: str  # e.g. "model.image_size"
    value: Any
    reason: str

    def describe(self) -> str:
        return f"{self.key}={self.value}: {self.reason}"


def fit_to_data(config: PipelineConfig, records) -> tuple[PipelineConfig, list[Choice]]:
    """`config` with its `auto` tiling, input size, levels and augmentation fitted to the training `records`
    (`pipeline.data.ImageRecord`s; with tiling, the choices after it see the windows); the anchors stay `auto`
    (fitted next, at the chosen size and levels)."""
    choices: list[Choice] = []
    if config.data.tiling == AUTO:
        choices.append(choose_tiling(config, records))
        config = replace(config, data={"tiling": choices[-1].value})
    if config.data.tiling != "off" and config.model.image_size == AUTO:
        official = config.model.resolve().image_size[0]
        choices.append(Choice("model.image_size", official, "data.tiling: a window's input, the official size"))
        config = replace(config, model={"image_size": official})
    records = training_records(config, records)
    if config.model.image_size == AUTO:
        choices.append(choose_image_size(config, records))
        config = replace(config, model={"image_size": choices[-1].value})
    if AUTO in (config.model.min_level, config.model.max_level):
        level_choices = choose_levels(config, records)
        choices += level_choices
        config = replace(config, model={c.key.split(".")[1]: c.value for c in level_choices})
    if config.data.augment == AUTO:
        choices.append(choose_augment(config, records))
        config = replace(config, data={"augment": choices[-1].value})
    return config, choices


def training_records(config: PipelineConfig, records):
    """What training sees of `records`: their windows when `data.tiling` is set (fitted), else the records."""
    if config.data.tiling in (AUTO, "off"):
        return records
    from pipeline.data.tiling import training_tiles

    return training_tiles(records, config.data.tiling_spec(config.model.resolve().image_size[0]))


def choose_tiling(config: PipelineConfig, records) -> Choice:
    """`data.tiling`: windows at native resolution when the images are at least TILE_RATIO x the input and their
    median box, fitted whole into the input an untiled run would take, falls under BUDGET_MEDIAN_PX while at native
    resolution it does not."""
    relative, longer = _relative_sizes(records)
    if not len(relative):
        return Choice("data.tiling", "off", "no training boxes to fit")
    pinned = config.model.image_size if isinstance(config.model.image_size, int) else None
    whole_size = pinned or choose_image_size(config, records).value  # what an untiled run would train at
    native = float(np.median([s * max(r.height, r.width) for r in records for s in _box_rows(r)[:, 1]]))
    whole_median = float(np.median(relative)) * whole_size
    side = pinned or config.model.resolve().image_size[0]  # a window's input: the official size unless pinned
    said = (
        f"the images are {longer:.0f} px, the median box {native:.0f} px: {whole_median:.1f} px when the image is "
        f"fitted into {whole_size} px"
    )
    if longer < TILE_RATIO * side or whole_median >= BUDGET_MEDIAN_PX or native < BUDGET_MEDIAN_PX:
        why = "large enough" if whole_median >= BUDGET_MEDIAN_PX else "too small at native resolution too"
        if longer < TILE_RATIO * side:
            why = f"under {TILE_RATIO:g}x the {side} px input"
        return Choice("data.tiling", "off", f"{said} ({why})")
    zoom = min(2.0, max(1.0, TARGET_MEDIAN_PX / native))  # upsample windows whose boxes are small natively
    size = max(64, int(round(side / zoom / 32)) * 32)
    sides = np.concatenate([np.maximum(*(r.boxes[:, 2:] - r.boxes[:, :2]).T) for r in records if len(r.boxes)])
    overlap = min(0.5, max(0.1, math.ceil(20 * float(np.quantile(sides, 0.9)) / size) / 20))
    value = {"size": size, "overlap": overlap}
    reason = (
        f"{said}; windows of {size} px overlapping {overlap:g} (the 90th-percentile box side "
        f"{np.quantile(sides, 0.9):.0f} px) at the {side} px input: median box {native * side / size:.0f} px"
    )
    return Choice("data.tiling", value, reason)


def _relative_sizes(records) -> tuple[np.ndarray, float]:
    """Each box's sqrt(w*h) over its image's longer side [n] (what fitting the image into the input scales), and
    the images' median longer side in px."""
    rows = [_box_rows(r)[:, 1] for r in records if len(r.boxes)]
    longer = float(np.median([max(r.height, r.width) for r in records])) if records else 0.0
    return (np.concatenate(rows) if rows else np.zeros(0)), longer


def _round_size(size: float) -> int:
    return max(SIZE_STEP, int(math.ceil(size / SIZE_STEP - 0.25)) * SIZE_STEP)  # up, unless barely over a step


def choose_image_size(config: PipelineConfig, records) -> Choice:
    """The input side at which the boxes are large enough for the anchors, within the compute cap; under a time
    budget, the smallest side at which they stay resolvable."""
    official = config.model.resolve().image_size[0]  # `auto` resolves to the variant's official size
    cap = config.model.max_image_size or 2 * official
    relative, longer = _relative_sizes(records)
    if not len(relative):
        return Choice("model.image_size", official, "no training boxes to fit: the variant's official size")
    median, small = float(np.median(relative)), float(np.quantile(relative, 0.1))
    wanted = max(TARGET_MEDIAN_PX / median, TARGET_SMALL_PX / small)
    # never below the official size unless the images are smaller: large boxes then take the official one
    lower = official if longer >= official else max(MIN_IMAGE_SIZE, _round_size(longer))
    upper = max(lower, min(_round_size(cap), _round_size(2 * longer)))
    size = lower if _round_size(wanted) <= lower else min(upper, _round_size(wanted))
    at = lambda s: f"median box {median * s:.0f} px, 10th percentile {small * s:.0f} px"  # noqa: E731
    if config.train.minutes is not None:
        return _budget_size(config, size, median, small, at)
    reason = f"at {size} px the {at(size)} (targets {TARGET_MEDIAN_PX:.0f} and {TARGET_SMALL_PX:.0f} px"
    if size < _round_size(wanted):
        cap_why = "model.max_image_size" if config.model.max_image_size else f"2x the official {official}"
        reason += f"; {_round_size(wanted)} px wanted, capped at 2x the images' {longer:.0f} px or {cap_why}"
    return Choice("model.image_size", size, reason + f"); the images are {longer:.0f} px")


def _budget_size(config: PipelineConfig, fitted: int, median: float, small: float, at) -> Choice:
    """Under `train.minutes`: the smallest size up to `fitted` whose boxes stay resolvable (more steps in the
    budget beat more pixels per step until the run is long)."""
    resolvable = max(BUDGET_MEDIAN_PX / median, BUDGET_SMALL_PX / small)
    size = min(fitted, max(MIN_IMAGE_SIZE, _round_size(resolvable)))
    reason = (
        f"train.minutes={config.train.minutes:g}: the smallest size at which the {at(size)} (at least "
        f"{BUDGET_MEDIAN_PX:.0f} and {BUDGET_SMALL_PX:.0f} px): a short run is step-limited"
    )
    if size < fitted:
        reason += f"; without a budget {fitted} px ({at(fitted)}): pin model.image_size to trade steps for pixels"
    return Choice("model.image_size", size, reason)


def choose_levels(config: PipelineConfig, records) -> list[Choice]:
    """`min_level` / `max_level` (the `auto` ones) for the boxes at the chosen input size, under the training
    scale jitter of the default augmentation."""
    model = config.model.resolve()  # auto levels resolve to the official ones
    boxes = records_input_boxes(records, model.image_size)
    boxes = jitter_scales(boxes, 0.75, 1.25)
    low, high = model.min_level, model.max_level
    why_low = f"the official P{low} kept"
    if config.model.min_level == AUTO and len(boxes):
        low, why_low = _choose_min_level(model, boxes)
    why_high = f"the official P{high} kept"
    if config.model.max_level == AUTO and len(boxes):
        high, why_high = _choose_max_level(model.replace(min_level=low), boxes)
    out = []
    if config.model.min_level == AUTO:
        out.append(Choice("model.min_level", low, why_low))
    if config.model.max_level == AUTO:
        out.append(Choice("model.max_level", high, why_high))
    return out


def _choose_min_level(model: EfficientDetConfig, boxes: np.ndarray) -> tuple[int, str]:
    base = anchor_stats(boxes, model)
    lower = _with_levels(model, model.min_level - 1, model.max_level)
    if lower is not None:
        lower_stats = anchor_stats(boxes, lower)
        if lower_stats.covered > base.covered + LEVEL_GAIN:
            return lower.min_level, (
                f"a stride-{2**lower.min_level} level gives {lower_stats.covered:.0%} of the boxes an anchor at "
                f"IoU >= 0.5 instead of {base.covered:.0%}"
            )
    if base.positives_per_level[0] < EMPTY_LEVEL and model.max_level - model.min_level > 2:
        return model.min_level + 1, f"P{model.min_level} matches almost no box ({base.positives_per_level[0]:.3f}/box)"
    return model.min_level, (
        f"the official P{model.min_level}: a stride-{2 ** (model.min_level - 1)} level would cover "
        f"{LEVEL_GAIN:.0%} more boxes or fewer"
    )


def _choose_max_level(model: EfficientDetConfig, boxes: np.ndarray) -> tuple[int, str]:
    high = model.max_level
    per_level = anchor_stats(boxes, model).positives_per_level  # [levels] min_level..max_level
    while high - model.min_level > 2 and per_level[high - model.min_level] < EMPTY_LEVEL:
        high -= 1
    if high == model.max_level:
        return high, f"the official P{high}: it matches {per_level[-1]:.2f} positive anchors per box"
    dropped = ", ".join(f"P{level}" for level in range(high + 1, model.max_level + 1))
    verb = "matches" if high + 1 == model.max_level else "match"
    return high, f"{dropped} {verb} almost no box (under {EMPTY_LEVEL} positive anchors per box)"


def _with_levels(model: EfficientDetConfig, min_level: int, max_level: int) -> EfficientDetConfig | None:
    try:
        return model.replace(min_level=min_level, max_level=max_level)
    except ValueError:  # the backbone has no such level, or the input size does not divide
        return None


def choose_augment(config: PipelineConfig, records) -> Choice:
    """`aerial` for data seen from above, `default` otherwise; the view is the config's or judged from the boxes."""
    if config.data.view != AUTO:
        preset = "aerial" if config.data.view == "overhead" else "default"
        return Choice("data.augment", preset, f"data.view={config.data.view}")
    view, evidence = judge_view(records)
    preset = "aerial" if view == "overhead" else "default"
    return Choice("data.augment", preset, f"judged {view} from the boxes ({evidence}); pin data.view to change it")


@dataclass(frozen=True)
class ViewEvidence:
    """What the boxes say about the camera (relative coordinates, y down)."""

    boxes: int
    wide: float  # share of boxes at least 10% wider than tall
    tall: float  # share at least 10% taller than wide
    size_height_correlation: float  # Spearman rank correlation of box size with its centre's height in the image
    top: float  # share of box centres in the top fifth of their image
    bottom: float  # ... in the bottom fifth

    def overhead(self) -> bool:
        """Seen from above: orientations both ways as often (or none), no perspective (sizes independent of the
        height in the image), objects as often at the top as at the bottom (no sky, no floor)."""
        shapes = max(self.wide, self.tall) < 0.1 or min(self.wide, self.tall) >= 0.6 * max(self.wide, self.tall)
        flat = abs(self.size_height_correlation) < 0.15
        spread = self.top >= 0.6 * self.bottom and self.top >= 0.08
        return self.boxes >= MIN_VIEW_BOXES and shapes and flat and spread

    def describe(self) -> str:
        return (
            f"{self.wide:.0%} of {self.boxes} boxes wider than tall, {self.tall:.0%} taller; size-height rank "
            f"correlation {self.size_height_correlation:+.2f}; {self.top:.0%} of the centres in the top fifth, "
            f"{self.bottom:.0%} in the bottom fifth"
        )


def view_evidence(records) -> ViewEvidence:
    """The boxes' shapes, sizes and heights in their images, over every training record."""
    rows = [_box_rows(r) for r in records if len(r.boxes)]
    data = np.concatenate(rows) if rows else np.zeros((0, 3))  # [n, 3] aspect w/h (px), relative size, centre y
    if len(data) < 2:
        return ViewEvidence(len(data), 0.0, 0.0, 0.0, 0.0, 0.0)
    aspect, size, y = data.T
    return ViewEvidence(
        boxes=len(data),
        wide=float((aspect > 1.1).mean()),
        tall=float((aspect < 1 / 1.1).mean()),
        size_height_correlation=_spearman(size, y),
        top=float((y < 0.2).mean()),
        bottom=float((y > 0.8).mean()),
    )


def _box_rows(record) -> np.ndarray:
    """[n, 3]: width/height in px, sqrt-area over the image's longer side, centre height over the image height."""
    wh = np.clip(record.boxes[:, 2:] - record.boxes[:, :2], 1e-6, None)
    size = np.sqrt(wh[:, 0] * wh[:, 1]) / max(record.height, record.width)
    centre_y = (record.boxes[:, 1] + record.boxes[:, 3]) / 2 / record.height
    return np.column_stack([wh[:, 0] / wh[:, 1], size, centre_y])


def judge_view(records) -> tuple[str, str]:
    """("overhead" | "side", the evidence in words)."""
    evidence = view_evidence(records)
    if evidence.boxes < MIN_VIEW_BOXES:
        return "side", f"only {evidence.boxes} boxes, too few to judge"
    return ("overhead" if evidence.overhead() else "side"), evidence.describe()


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks_a, ranks_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if ranks_a.std() == 0 or ranks_b.std() == 0:
        return 0.0
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])
