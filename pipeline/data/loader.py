"""Train and validation loaders for one (possibly distributed) worker: torch DataLoaders, or Ray Data
(`pipeline.data.ray_engine`), over the same samplers (`pipeline.data.samplers`); call
``train.sampler.set_epoch(epoch)`` every epoch, also with one worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from torch.utils.data import DataLoader

from pipeline.config.augment import parse_augment
from pipeline.config.tiling import TilingSpec
from pipeline.data import storage
from pipeline.data.coco_index import ImageRecord
from pipeline.data.dataset import DetectionDataset, collate_fn
from pipeline.data.decode import DEFAULT_MAX_IMAGE_PIXELS
from pipeline.data.layout import LabelMap
from pipeline.data.samplers import GlobalBatchSampler, SeededSampler, ShardedEvalSampler
from pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD, AugmentOptions, DetectionTransform
from pipeline.data.validate import validate_dataset


def training_augmentation(
    options: AugmentOptions, records: Sequence[ImageRecord], image_size: int | tuple[int, int]
) -> AugmentOptions:
    """`options` with the scale jitter bounded for this dataset's small boxes (`AugmentOptions.bounded`)."""
    from pipeline.data.anchor_fit import records_input_boxes, small_box_px

    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return options.bounded(small_box_px(records_input_boxes(records, size)))


class DataLoaders(NamedTuple):
    train: DataLoader
    val: DataLoader


def build_dataloaders(
    dataset_dir: storage.Location,
    image_size: int | tuple[int, int],
    *,
    batch_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    augment: AugmentOptions | None = None,
    rank: int = 0,
    world_size: int = 1,
    chunks_per_step: int | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    prefetch_factor: int = 4,
    val_batch_size: int | None = None,
    label_map: LabelMap | None = None,
    seed: int = 0,
    validate: bool = True,
    check_images: bool = True,
    cache_dir: str | None = None,
    engine: str = "torch",
    ray_cpus_per_task: float = 1.0,
    tiling: TilingSpec | None = None,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> DataLoaders:
    """Train and val loaders of ``dataset_dir`` for worker ``rank`` of ``world_size``.

    ``validate`` runs `validate_dataset` first and raises `DatasetError` on fatal problems
    (``check_images=False`` skips decoding every image, e.g. on workers after the driver checked).
    ``pin_memory`` (for a GPU) makes the host-to-device copy asynchronous. ``cache_dir`` keeps a remote dataset's
    images on this node's disk after their first read. ``engine="ray"`` decodes and augments in Ray Data tasks on
    any cluster CPU (`pipeline.data.ray_engine`, each task reserving ``ray_cpus_per_task``), with the same samplers.
    An optimizer step takes ``chunks_per_step`` train batches of exactly ``batch_size`` images over all ranks
    (default: one per rank), laid out the same at any world size, and every image is seen at least once per epoch
    (see `GlobalBatchSampler`). ``train.dataset.label_map`` and ``val.dataset.coco``
    give the label map and the validation ground truth. ``tiling`` trains on windows of the images and evaluates
    every window plus the whole image (`pipeline.data.tiling`); an epoch then counts windows. An image past
    ``max_image_pixels`` is refused by name, from its header.
    """
    if validate:
        validate_dataset(dataset_dir, check_images=check_images, max_pixels=max_image_pixels).raise_if_fatal()
    sets = {"cache_dir": cache_dir, "tiling": tiling, "max_pixels": max_image_pixels}
    train_set = DetectionDataset(dataset_dir, "train", None, label_map, **sets)
    options = training_augmentation(augment or parse_augment("default"), train_set.records, image_size)
    train_set.transform = DetectionTransform(image_size, mean, std, train=True, options=options)
    val_tf = DetectionTransform(image_size, mean, std, train=False)
    val_set = DetectionDataset(dataset_dir, "val", val_tf, train_set.label_map, **sets)
    # keys (index, augmentation seed of (seed, epoch, index)): the same images and augmentation in either engine
    by_step = GlobalBatchSampler(len(train_set), batch_size, chunks_per_step or world_size, world_size, rank, seed=seed)
    train_sampler = SeededSampler(by_step, seed)
    val_sampler = SeededSampler(ShardedEvalSampler(len(val_set), rank, world_size), seed)
    if engine == "ray":
        from pipeline.data.ray_engine import RayDataLoader

        options = {"cpus_per_task": ray_cpus_per_task, "prefetch_batches": prefetch_factor}
        return DataLoaders(
            RayDataLoader(train_set, train_sampler, batch_size, **options),
            RayDataLoader(val_set, val_sampler, val_batch_size or batch_size, **options),
        )
    common = {"num_workers": num_workers, "collate_fn": collate_fn, "pin_memory": pin_memory}
    if num_workers > 0:  # processes that outlive an epoch, each `prefetch_factor` batches ahead
        common.update(persistent_workers=True, prefetch_factor=prefetch_factor)
        if storage.is_remote(dataset_dir):  # the AWS SDK is not fork-safe once used (the JSON was read here)
            common.update(multiprocessing_context="forkserver")
    train = DataLoader(train_set, batch_size=batch_size, sampler=train_sampler, **common)
    val = DataLoader(val_set, batch_size=val_batch_size or batch_size, sampler=val_sampler, **common)
    return DataLoaders(train, val)
