"""`data:`: where the dataset lives, how it is loaded and augmented, and the demo set generated when it is absent."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config.augment import parse_augment
from pipeline.config.checks import ConfigError, at_least_or_null, check, choice, parse_image_check
from pipeline.config.model import AUTO
from pipeline.config.tiling import TilingSpec, check_tiling, resolve_tiling

SYNTH_PRESETS = ("shapes", "dense", "overhead", "aerial")  # `pipeline.data.synth.PRESETS`, named here for config checks

VIEWS = ("auto", "overhead", "side")
# 20,000 x 20,000 px: 1.2 GB as uint8 RGB, the largest image we expect a node to hold whole (pipeline/data/decode.py)
DEFAULT_MAX_IMAGE_PIXELS = 400_000_000


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
    # generated dataset: shapes (the demo) | dense (small, overlapping objects) | overhead | aerial (large images)
    synth_preset: str = "shapes"
    synth_images: int = 400  # demo dataset: total images (train + val)
    synth_size: int = 256  # demo dataset: image side in px
    synth_val_fraction: float = 0.2
    batch_size: int = 8  # per worker
    val_batch_size: int | None = None  # null = batch_size
    # DataLoader processes per training worker; auto = the worker's CPUs but one (at least 2) on a GPU, 0 on CPU (load
    # in the training process, which already uses every CPU): pipeline/training/device.py
    loader_workers: int | str = "auto"
    prefetch_factor: int = 4  # batches each loader process prepares ahead
    # training augmentation: auto (aerial for data seen from above, see `view`, else default), a preset (default |
    # strong | aerial | none) or a list of steps, e.g. [{scale: {min: 0.5, max: 1.5}}, {hflip: {p: 0.5}}, {color: {}}]
    # (ops: pipeline/config/augment.py)
    augment: str | tuple[dict | str, ...] = "auto"
    # how the images were taken: overhead (aerial, satellite, microscopy: every orientation is plausible) | side
    # (upright scenes) | auto (judged from the training boxes, and said: pipeline/data/auto_fit.py)
    view: str = "auto"
    # large images: auto (windows when the images are much larger than the model input and their boxes too small at
    # it) | off | {size: PX, overlap: F} | {scale: S, overlap: F}: training on windows that cover every box each
    # epoch, evaluation and prediction sliced and merged on the full images (pipeline/config/tiling.py)
    tiling: str | bool | dict = "auto"  # YAML reads a bare `off` as false: taken as off
    # an image past this many pixels (or a decompression bomb declaring it) is refused from its header, by name
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        check(bool(self.dir), "data.dir", self.dir, "must be a non-empty path")
        check(self.cache_dir != "", "data.cache_dir", self.cache_dir, "must be a path or null")
        choice("data.engine", self.engine, ("torch", "ray"))
        check(self.ray_cpus_per_task > 0, "data.ray_cpus_per_task", self.ray_cpus_per_task, "must be > 0")
        try:
            parse_image_check(self.check_images)
        except ValueError as e:
            raise ConfigError(f"data.check_images: {e}") from None
        choice("data.synth_preset", self.synth_preset, SYNTH_PRESETS)
        check(self.synth_images >= 2, "data.synth_images", self.synth_images, "must be >= 2")
        check(self.synth_size >= 32, "data.synth_size", self.synth_size, "must be >= 32")
        check(0 < self.synth_val_fraction < 1, "data.synth_val_fraction", self.synth_val_fraction, "must be in (0, 1)")
        check(self.batch_size >= 1, "data.batch_size", self.batch_size, "must be >= 1")
        at_least_or_null("data.val_batch_size", self.val_batch_size, 1)
        check(
            self.loader_workers == "auto" or (isinstance(self.loader_workers, int) and self.loader_workers >= 0),
            "data.loader_workers",
            self.loader_workers,
            "must be auto or a number >= 0",
        )
        check(self.prefetch_factor >= 1, "data.prefetch_factor", self.prefetch_factor, "must be >= 1")
        choice("data.view", self.view, VIEWS)
        check(self.max_image_pixels >= 1_000_000, "data.max_image_pixels", self.max_image_pixels, "must be >= 1000000")
        if self.tiling is False:
            object.__setattr__(self, "tiling", "off")
        try:
            check_tiling(self.tiling)
        except ValueError as e:
            raise ConfigError(f"data.tiling: {e}") from None
        try:
            if self.augment != AUTO:
                self.augment_options()
        except ValueError as e:
            raise ConfigError(f"data.augment{'' if str(e).startswith('[') else ': '}{e}") from None

    def augment_options(self):
        """The resolved training augmentation (`pipeline.config.augment.AugmentOptions`)."""
        assert self.augment != AUTO, "data.augment: auto must be fitted (pipeline.data.auto_fit) first"
        return parse_augment(self.augment)

    def tiling_spec(self, input_side: int) -> TilingSpec | None:
        """The fitted windows for a model input of `input_side` px (None: whole images)."""
        return resolve_tiling(self.tiling, input_side)

    @property
    def needs_fit(self) -> bool:
        """The augmentation or the tiling is `auto`: chosen from the data (`pipeline.data.auto_fit`) before
        training."""
        return AUTO in (self.augment, self.tiling)
