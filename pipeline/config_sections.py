"""The sections of the training job's configuration: one frozen dataclass per concern, each checking its own values.

A section refuses a bad value with `ConfigError` naming the key and the value; `pipeline.config` builds the
whole job from YAML and `--set` overrides and re-exports every section.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from effdet_core.config import FEATURE_NETWORKS, FUSION_METHODS, VARIANTS


class ConfigError(ValueError):
    """A user error in the configuration: the message names the key and the bad value or the file."""


EVAL_EVERY_PATTERN = re.compile(r"^\s*(\d+)\s*(epochs?|steps?)?\s*$")


def parse_eval_every(value: str) -> tuple[int, str] | None:
    """`"3"`, `"3 epochs"`, `"500 steps"` -> (count, "epochs" | "steps"); `"auto"` -> None. ValueError otherwise."""
    if value.strip() == "auto":
        return None
    match = EVAL_EVERY_PATTERN.match(value)
    if not match or int(match.group(1)) < 1:
        raise ValueError("must be auto, a number of epochs, or e.g. '2 epochs' / '500 steps' (>= 1)")
    unit = match.group(2) or "epochs"
    return int(match.group(1)), "steps" if unit.startswith("step") else "epochs"


def _check(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {why}")


def _at_least_or_null(key: str, value: Any, low: float) -> None:
    _check(value is None or value >= low, key, value, f"must be >= {low:g} or null")


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    _check(value in choices, key, value, f"not supported; choose one of {list(choices)}")


@dataclass(frozen=True)
class DataConfig:
    """Where the dataset lives, how it is loaded, and the demo dataset generated when it is absent."""

    # a local directory, or an object-store prefix (s3://bucket/set, gs://...; pipeline/data/storage.py)
    dir: str = "data/demo"
    # remote datasets: keep each image on the node's disk after its first read (later epochs read disk); null = off
    cache_dir: str | None = None
    # who decodes and augments: torch (DataLoader processes beside each training worker) | ray (Ray Data tasks on any
    # CPU of the cluster, CPU-only nodes included: pipeline/data/ray_engine.py); the same images per rank and epoch
    engine: str = "torch"
    ray_cpus_per_task: float = 1.0  # engine ray: CPUs each Ray Data task reserves
    # image files read before training: all | sample:N (per split) | none; local files are decoded whole, objects in
    # a bucket checked from their header (pipeline/data/validate.py)
    check_images: str = "all"
    generate_if_missing: bool = True  # write the synthetic demo dataset into `dir` when it does not exist
    synth_preset: str = "shapes"  # generated dataset: shapes (the demo) | dense (small, overlapping objects)
    synth_images: int = 400  # demo dataset: total images (train + val)
    synth_size: int = 256  # demo dataset: image side in px
    synth_val_fraction: float = 0.2
    batch_size: int = 8  # per worker
    val_batch_size: int | None = None  # null = batch_size
    # DataLoader processes per training worker; auto = the worker's CPUs but one (at least 2) on a GPU, 0 on CPU (load
    # in the training process, which already uses every CPU): pipeline/training/device.py
    loader_workers: int | str = "auto"
    prefetch_factor: int = 4  # batches each loader process prepares ahead
    # training augmentation: a preset (default | strong | aerial | none) or a list of steps, e.g.
    # [{scale: {min: 0.5, max: 1.5}}, {hflip: {p: 0.5}}, {color: {}}] (ops: pipeline/data/augment_spec.py)
    augment: str | tuple[dict | str, ...] = "default"

    def __post_init__(self) -> None:
        _check(bool(self.dir), "data.dir", self.dir, "must be a non-empty path")
        _check(self.cache_dir != "", "data.cache_dir", self.cache_dir, "must be a path or null")
        _choice("data.engine", self.engine, ("torch", "ray"))
        _check(self.ray_cpus_per_task > 0, "data.ray_cpus_per_task", self.ray_cpus_per_task, "must be > 0")
        try:
            from pipeline.data.validate import parse_image_check

            parse_image_check(self.check_images)
        except ValueError as e:
            raise ConfigError(f"data.check_images: {e}") from None
        _choice("data.synth_preset", self.synth_preset, ("shapes", "dense"))
        _check(self.synth_images >= 2, "data.synth_images", self.synth_images, "must be >= 2")
        _check(self.synth_size >= 32, "data.synth_size", self.synth_size, "must be >= 32")
        _check(0 < self.synth_val_fraction < 1, "data.synth_val_fraction", self.synth_val_fraction, "must be in (0, 1)")
        _check(self.batch_size >= 1, "data.batch_size", self.batch_size, "must be >= 1")
        _at_least_or_null("data.val_batch_size", self.val_batch_size, 1)
        _check(
            self.loader_workers == "auto" or (isinstance(self.loader_workers, int) and self.loader_workers >= 0),
            "data.loader_workers",
            self.loader_workers,
            "must be auto or a number >= 0",
        )
        _check(self.prefetch_factor >= 1, "data.prefetch_factor", self.prefetch_factor, "must be >= 1")
        try:
            self.augment_options()
        except ValueError as e:
            raise ConfigError(f"data.augment{'' if str(e).startswith('[') else ': '}{e}") from None

    def augment_options(self):
        """The resolved training augmentation (`pipeline.data.augment_spec.AugmentOptions`)."""
        from pipeline.data.augment_spec import parse_augment

        return parse_augment(self.augment)


MODEL_VARIANTS = tuple(VARIANTS)  # effdet_core's named variants: one list for the whole project
_MODEL_OVERRIDE_KEYS = (
    "fpn_channels",
    "fpn_repeats",
    "head_repeats",
    "fusion",
    "feature_network",
    "backbone",
    "anchor_scale",
    "num_scales",
    "min_level",
    "max_level",
    "bn_momentum",
)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
AUTO = "auto"  # a value fitted to the training boxes before training (`pipeline.data.anchor_fit`)


@dataclass(frozen=True)
class ModelConfig:
    """Which EfficientDet to build; null fields keep the variant's official value."""

    variant: str = "lite0"
    image_size: int | None = 256  # square input side, divisible by 2**max_level (128); null = official
    # a weights file, "imagenet" (offline ImageNet weights: Lite0-2), "timm" (Hugging Face cache) or null (random)
    pretrained_backbone: str | None = "imagenet"
    fpn_channels: int | None = None  # BiFPN width W
    fpn_repeats: int | None = None  # BiFPN depth D (cells)
    head_repeats: int | None = None  # class/box net depth
    fusion: str | None = None  # fast | softmax | sum
    feature_network: str | None = None  # bifpn | panet | fpn
    backbone: str | None = None  # a timm EfficientNet name, e.g. tf_efficientnet_b1
    # anchors: null keeps the variant's official values; "auto" fits them to the training boxes before training
    anchor_scale: float | str | None = None  # anchor side = anchor_scale * level stride (official: 4, Lite: 3)
    anchor_ratios: tuple[float, ...] | str | None = None  # width/height ratios, e.g. [0.5, 1.0, 2.0]
    num_scales: int | None = None  # octave scales per level (official: 3)
    min_level: int | None = None  # pyramid levels P{min}..P{max} (official: 3..7, D7x 3..8)
    max_level: int | None = None
    # BatchNorm momentum of the feature network and heads (PyTorch sense). The official 0.01 suits 300 epochs; in
    # runs of a few hundred steps its running statistics lag the weights they normalise (README "Recipe"). null =
    # the official value
    bn_momentum: float | None = 0.1

    def __post_init__(self) -> None:
        _choice("model.variant", self.variant, MODEL_VARIANTS)
        for key in ("anchor_scale", "anchor_ratios"):
            value = getattr(self, key)
            _check(not isinstance(value, str) or value == AUTO, f"model.{key}", value, "must be a value, auto or null")
        _check(
            not isinstance(self.anchor_scale, float) or self.anchor_scale > 0,
            "model.anchor_scale",
            self.anchor_scale,
            "must be > 0",
        )
        if isinstance(self.anchor_ratios, tuple):
            _check(
                len(self.anchor_ratios) > 0 and all(r > 0 for r in self.anchor_ratios),
                "model.anchor_ratios",
                list(self.anchor_ratios),
                "must be a non-empty list of positive width/height ratios",
            )
        if self.fusion is not None:
            _choice("model.fusion", self.fusion, FUSION_METHODS)
        if self.feature_network is not None:
            _choice("model.feature_network", self.feature_network, FEATURE_NETWORKS)
        _check(self.backbone is None or bool(self.backbone), "model.backbone", self.backbone, "must be a name or null")
        # divisibility by 2**max_level is effdet_core's rule (it allows the official uneven Lite sizes); it is
        # checked against the real model config by `pipeline.job.resolve_job` (and each worker) before any training
        _check(self.image_size is None or self.image_size > 0, "model.image_size", self.image_size, "must be > 0")
        _check(
            self.bn_momentum is None or 0 < self.bn_momentum <= 1,
            "model.bn_momentum",
            self.bn_momentum,
            "must be in (0, 1] or null",
        )
        for key in ("fpn_channels", "fpn_repeats", "head_repeats", "num_scales", "min_level", "max_level"):
            _at_least_or_null(f"model.{key}", getattr(self, key), 1)

    def build(self, num_classes: int, pretrained: bool = True):
        """The bare EfficientDet this config describes (pretrained backbone unless `pretrained=False`, e.g. when
        the weights come from a checkpoint)."""
        from effdet_core import create_model

        assert not self.needs_fit, "auto anchor settings must be fitted (pipeline.data.anchor_fit) before building"

        backbone = self.pretrained_backbone if pretrained else None
        return create_model(self.variant, num_classes, pretrained_backbone=backbone, **self.overrides())

    @property
    def needs_fit(self) -> bool:
        """Some anchor setting is `auto`: fit it to the data (`pipeline.data.anchor_fit`) before building."""
        return AUTO in (self.anchor_scale, self.anchor_ratios)

    def overrides(self) -> dict[str, Any]:
        """The keyword overrides for `effdet_core.create_model` (only the fields that are set; `auto` values keep
        the variant's official ones until they are fitted)."""
        from effdet_core.config import aspect_ratio_pairs

        out: dict[str, Any] = {}
        if self.image_size is not None:
            out["image_size"] = (self.image_size, self.image_size)
        for key in _MODEL_OVERRIDE_KEYS:
            if getattr(self, key) not in (None, AUTO):
                out[key] = getattr(self, key)
        if isinstance(self.anchor_ratios, tuple):
            out["aspect_ratios"] = aspect_ratio_pairs(self.anchor_ratios)
        return out

    def resolve(self):
        """The `effdet_core.EfficientDetConfig` this describes, without building the network; every inconsistency
        (a size the levels cannot divide, weights that do not fit the backbone) is a ConfigError."""
        from effdet_core import get_config

        try:
            resolved = get_config(self.variant, **self.overrides())
        except ValueError as e:  # effdet_core names the field; say which config section it came from
            raise ConfigError(f"model: {e}") from None
        from effdet_core.backbone import check_backbone_weights

        try:
            check_backbone_weights(self.pretrained_backbone, resolved.backbone)
        except ValueError as e:
            raise ConfigError(f"model.{e} (model.variant={self.variant!r})") from None
        return resolved


@dataclass(frozen=True)
class OptimConfig:
    """The optimisation recipe: optimizer, learning-rate schedule, regularisation, EMA."""

    name: str = "sgd"
    # for a global batch of `lr_reference_batch` images, scaled to the real one by `lr_scaling` (0.226 at a batch of
    # 8, 0.45 at 32); 8x the official 0.08, which is tuned for 300 epochs (README "Recipe" has the measurements)
    lr: float = 0.64
    lr_reference_batch: int = 64
    lr_scaling: str = "sqrt"  # sqrt (lr * sqrt(batch / reference)) | linear (lr * batch / reference)
    momentum: float = 0.9  # SGD momentum, or AdamW beta1
    weight_decay: float = 4e-5  # on weights only: never on biases or norm parameters
    warmup_epochs: float = 1.0
    warmup_steps: int | None = None  # wins over warmup_epochs when set
    warmup_start_factor: float = 0.1
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio
    clip_grad_norm: float | None = 10.0
    ema_decay: float | None = 0.9998  # null disables EMA (the raw weights are evaluated and saved)
    ema_warmup: bool = True  # ramp the decay up at the start, so short runs do not evaluate near-init weights

    def __post_init__(self) -> None:
        _choice("optim.name", self.name, ("sgd", "adamw"))
        _check(self.lr > 0, "optim.lr", self.lr, "must be > 0")
        _check(self.lr_reference_batch >= 1, "optim.lr_reference_batch", self.lr_reference_batch, "must be >= 1")
        _choice("optim.lr_scaling", self.lr_scaling, ("sqrt", "linear"))
        _check(0 <= self.momentum < 1, "optim.momentum", self.momentum, "must be in [0, 1)")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "must be >= 0")
        _check(self.warmup_epochs >= 0, "optim.warmup_epochs", self.warmup_epochs, "must be >= 0")
        _at_least_or_null("optim.warmup_steps", self.warmup_steps, 0)
        _check(
            0 < self.warmup_start_factor <= 1,
            "optim.warmup_start_factor",
            self.warmup_start_factor,
            "must be in (0, 1]",
        )
        _check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")
        _check(
            self.clip_grad_norm is None or self.clip_grad_norm > 0,
            "optim.clip_grad_norm",
            self.clip_grad_norm,
            "must be > 0 or null",
        )
        _check(
            self.ema_decay is None or 0 < self.ema_decay < 1,
            "optim.ema_decay",
            self.ema_decay,
            "must be in (0, 1) or null",
        )


@dataclass(frozen=True)
class TrainConfig:
    """The loop: length, precision, compilation, accumulation, where local outputs go."""

    # length: epochs or optimizer steps (not both); neither = chosen from the dataset's size (the header says why)
    epochs: int | None = None
    steps: int | None = None
    eval_every: str = "auto"  # N (epochs), "N epochs", "N steps" or auto (about 6 per run); always at the end
    seed: int = 0
    # auto (bf16 on GPUs that have it, else fp16 with a grad scaler; fp32 on CPU) | none | bf16 | fp16 (explicit
    # values are honoured on CPU too): pipeline/training/device.py
    amp: str = "auto"
    sync_bn: bool = True  # BN statistics over the global batch, as the official recipe (GPU workers > 1 only)
    compile: bool = False  # torch.compile the training module
    compile_mode: str = "default"  # default | reduce-overhead (CUDA graphs) | max-autotune | max-autotune-no-cudagraphs
    channels_last: bool = True  # NHWC activations: faster convolutions on CPU (oneDNN) and GPU tensor cores
    cudnn_benchmark: bool = True  # autotune cuDNN convolutions for the (fixed) input size
    grad_accum_steps: int = 1
    threads_per_worker: int | None = None  # torch intra-op threads; null = the worker's CPU share
    output_dir: str = "outputs"
    # checkpoints between evaluations too (Ray Train keeps ray.num_to_keep; search trials checkpoint at evaluations
    # only): every N optimizer steps and/or every M minutes (rank 0's clock); a resumed run goes on from the step
    checkpoint_every_steps: int | None = None
    checkpoint_every_minutes: float | None = None
    # sync: training waits for each such checkpoint's upload (a crash costs at most one interval); async: Ray uploads
    # in the background, training goes on (for slow buckets; a crash during an upload costs up to two intervals and
    # may log that window's step metrics twice)
    checkpoint_upload: str = "sync"
    # a progress line (and step metrics to MLflow) at most this often inside a period, from rank 0; null = none
    log_every_seconds: float | None = 30.0
    # test hook (pipeline/training/faults.py): rank 0 raises once as epoch `fault_epoch` starts, or after each step of
    # `fault_steps` instead, while this file (per step: FILE.stepN) is absent
    fault_marker: str | None = None
    fault_epoch: int = 2
    fault_steps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _at_least_or_null("train.epochs", self.epochs, 1)
        _at_least_or_null("train.steps", self.steps, 1)
        _check(
            self.epochs is None or self.steps is None,
            "train.steps",
            self.steps,
            f"give train.epochs ({self.epochs}) or train.steps, not both",
        )
        try:
            parse_eval_every(self.eval_every)
        except ValueError as e:
            raise ConfigError(f"train.eval_every={self.eval_every!r}: {e}") from None
        _choice("train.amp", self.amp, ("auto", "none", "bf16", "fp16"))
        _choice("train.compile_mode", self.compile_mode, COMPILE_MODES)
        _choice("train.checkpoint_upload", self.checkpoint_upload, ("sync", "async"))
        _check(self.grad_accum_steps >= 1, "train.grad_accum_steps", self.grad_accum_steps, "must be >= 1")
        _at_least_or_null("train.threads_per_worker", self.threads_per_worker, 1)
        _check(self.fault_epoch >= 1, "train.fault_epoch", self.fault_epoch, "must be >= 1")
        _check(all(step >= 1 for step in self.fault_steps), "train.fault_steps", self.fault_steps, "must be >= 1")
        _at_least_or_null("train.checkpoint_every_steps", self.checkpoint_every_steps, 1)
        _check(
            self.checkpoint_every_minutes is None or self.checkpoint_every_minutes > 0,
            "train.checkpoint_every_minutes",
            self.checkpoint_every_minutes,
            "must be > 0 or null",
        )
        _check(
            self.log_every_seconds is None or self.log_every_seconds > 0,
            "train.log_every_seconds",
            self.log_every_seconds,
            "must be > 0 or null",
        )


@dataclass(frozen=True)
class EvalConfig:
    """How validation turns the network's outputs into detections (the registered model keeps its own settings,
    hard NMS by default, for serving speed)."""

    nms: str = "soft"  # soft: Gaussian soft-NMS, as the official evaluation | hard: torchvision's batched NMS
    soft_nms_sigma: float = 0.5
    iou_threshold: float = 0.5  # hard NMS
    max_detections: int = 100  # per image, as COCO counts them

    def __post_init__(self) -> None:
        _choice("eval.nms", self.nms, ("soft", "hard"))
        _check(self.soft_nms_sigma > 0, "eval.soft_nms_sigma", self.soft_nms_sigma, "must be > 0")
        _check(0 < self.iou_threshold <= 1, "eval.iou_threshold", self.iou_threshold, "must be in (0, 1]")
        _check(self.max_detections >= 1, "eval.max_detections", self.max_detections, "must be >= 1")

    def postprocess(self):
        """The `effdet_core.PostprocessConfig` of these settings."""
        from effdet_core import PostprocessConfig

        return PostprocessConfig(
            nms_iou_threshold=self.iou_threshold,
            max_detections=self.max_detections,
            soft_nms=self.nms == "soft",
            soft_nms_sigma=self.soft_nms_sigma,
        )


@dataclass(frozen=True)
class RayConfig:
    """Ray Train scaling, storage and fault tolerance."""

    num_workers: int = 2
    use_gpu: bool = False
    # on a GPU worker its loader processes decode and augment (data.loader_workers auto = this - 1): docs/SCALING.md
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # with use_gpu; a fraction (0.5) packs several trials' workers on one GPU
    address: str | None = None  # null: connect to RAY_ADDRESS or start a local Ray
    storage_path: str = "ray_results"  # made absolute in the driver; shared storage on a cluster
    # storage_path is a filesystem mounted at the same path on every node (NFS, EFS, Filestore...): needed for a
    # local-looking path on a multi-node cluster; verified by a probe when the run starts
    shared_storage: bool = False
    name: str | None = None  # run name; null = a new timestamped one (or the latest with --resume)
    max_failures: int = 1  # worker-group restarts; each resumes from the last epoch checkpoint
    # restarts after a node of the run was preempted (Ray's drain: a spot reclaim), counted apart from failures; each
    # resumes from the checkpoint the notice triggered (-1 = unlimited)
    max_preemptions: int = -1
    num_to_keep: int = 2  # epoch checkpoints kept by Ray (the best one is kept separately for MLflow)
    placement_strategy: str = "PACK"

    def __post_init__(self) -> None:
        _check(self.num_workers >= 1, "ray.num_workers", self.num_workers, "must be >= 1")
        _check(self.cpus_per_worker > 0, "ray.cpus_per_worker", self.cpus_per_worker, "must be > 0")
        _check(
            0 < self.gpus_per_worker <= 1 or float(self.gpus_per_worker).is_integer(),
            "ray.gpus_per_worker",
            self.gpus_per_worker,
            "must be a fraction in (0, 1] or a whole number",
        )
        _check(self.max_failures >= -1, "ray.max_failures", self.max_failures, "must be >= -1 (-1 = unlimited)")
        _check(
            self.max_preemptions >= -1, "ray.max_preemptions", self.max_preemptions, "must be >= -1 (-1 = unlimited)"
        )
        _check(self.num_to_keep >= 1, "ray.num_to_keep", self.num_to_keep, "must be >= 1")
        _choice("ray.placement_strategy", self.placement_strategy, ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"))
        _check(bool(self.storage_path), "ray.storage_path", self.storage_path, "must be a non-empty path or URI")


@dataclass(frozen=True)
class MlflowConfig:
    """Where and how the run is tracked."""

    tracking_uri: str | None = None  # null: MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db
    experiment: str = "efficientdet"
    run_name: str | None = None
    log_checkpoint: bool = True  # log the best checkpoint as an artifact
    grid_images: int = 8  # validation images in the predicted-vs-true grid
    score_threshold: float = 0.3  # for drawing predicted boxes in the grid

    def __post_init__(self) -> None:
        _check(bool(self.experiment), "mlflow.experiment", self.experiment, "must be a non-empty name")
        _check(self.grid_images >= 0, "mlflow.grid_images", self.grid_images, "must be >= 0")
        _check(0 <= self.score_threshold <= 1, "mlflow.score_threshold", self.score_threshold, "must be in [0, 1]")
