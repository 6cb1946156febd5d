"""`optim:`, `train:` and `eval:`: the optimisation recipe, the run's length and cadence, and its evaluation."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config.checks import ConfigError, at_least_or_null, check, choice, parse_eval_every

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


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
        choice("optim.name", self.name, ("sgd", "adamw"))
        check(self.lr > 0, "optim.lr", self.lr, "must be > 0")
        check(self.lr_reference_batch >= 1, "optim.lr_reference_batch", self.lr_reference_batch, "must be >= 1")
        choice("optim.lr_scaling", self.lr_scaling, ("sqrt", "linear"))
        check(0 <= self.momentum < 1, "optim.momentum", self.momentum, "must be in [0, 1)")
        check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "must be >= 0")
        check(self.warmup_epochs >= 0, "optim.warmup_epochs", self.warmup_epochs, "must be >= 0")
        at_least_or_null("optim.warmup_steps", self.warmup_steps, 0)
        check(
            0 < self.warmup_start_factor <= 1,
            "optim.warmup_start_factor",
            self.warmup_start_factor,
            "must be in (0, 1]",
        )
        check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")
        check(
            self.clip_grad_norm is None or self.clip_grad_norm > 0,
            "optim.clip_grad_norm",
            self.clip_grad_norm,
            "must be > 0 or null",
        )
        check(
            self.ema_decay is None or 0 < self.ema_decay < 1,
            "optim.ema_decay",
            self.ema_decay,
            "must be in (0, 1) or null",
        )


@dataclass(frozen=True)
class TrainConfig:
    """The loop: length, precision, compilation, accumulation, where local outputs go."""

    # length: epochs, optimizer steps or minutes (one of them); none = chosen from the dataset's size (the header
    # says why). minutes: a time budget for the whole run (start-up, training, evaluations, the end): the step count
    # is planned from the step rate measured in the first steps (pipeline/training/budget.py)
    epochs: int | None = None
    steps: int | None = None
    minutes: float | None = None
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
        at_least_or_null("train.epochs", self.epochs, 1)
        at_least_or_null("train.steps", self.steps, 1)
        lengths = {key: getattr(self, key) for key in ("epochs", "steps", "minutes") if getattr(self, key) is not None}
        check(
            len(lengths) <= 1,
            "train." + list(lengths)[-1] if lengths else "train",
            list(lengths.values())[-1] if lengths else None,
            f"give one of train.epochs, train.steps or train.minutes, not {sorted(lengths)}",
        )
        check(self.minutes is None or self.minutes > 0, "train.minutes", self.minutes, "must be > 0 or null")
        try:
            parse_eval_every(self.eval_every)
        except ValueError as e:
            raise ConfigError(f"train.eval_every={self.eval_every!r}: {e}") from None
        choice("train.amp", self.amp, ("auto", "none", "bf16", "fp16"))
        choice("train.compile_mode", self.compile_mode, COMPILE_MODES)
        choice("train.checkpoint_upload", self.checkpoint_upload, ("sync", "async"))
        check(self.grad_accum_steps >= 1, "train.grad_accum_steps", self.grad_accum_steps, "must be >= 1")
        at_least_or_null("train.threads_per_worker", self.threads_per_worker, 1)
        check(self.fault_epoch >= 1, "train.fault_epoch", self.fault_epoch, "must be >= 1")
        check(all(step >= 1 for step in self.fault_steps), "train.fault_steps", self.fault_steps, "must be >= 1")
        at_least_or_null("train.checkpoint_every_steps", self.checkpoint_every_steps, 1)
        check(
            self.checkpoint_every_minutes is None or self.checkpoint_every_minutes > 0,
            "train.checkpoint_every_minutes",
            self.checkpoint_every_minutes,
            "must be > 0 or null",
        )
        check(
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
        choice("eval.nms", self.nms, ("soft", "hard"))
        check(self.soft_nms_sigma > 0, "eval.soft_nms_sigma", self.soft_nms_sigma, "must be > 0")
        check(0 < self.iou_threshold <= 1, "eval.iou_threshold", self.iou_threshold, "must be in (0, 1]")
        check(self.max_detections >= 1, "eval.max_detections", self.max_detections, "must be >= 1")

    def postprocess(self):
        """The `effdet_core.PostprocessConfig` of these settings."""
        from effdet_core import PostprocessConfig

        return PostprocessConfig(
            nms_iou_threshold=self.iou_threshold,
            max_detections=self.max_detections,
            soft_nms=self.nms == "soft",
            soft_nms_sigma=self.soft_nms_sigma,
        )
