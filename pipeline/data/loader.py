"""Train and validation DataLoaders for one (possibly distributed) worker.

Training uses `FullBatchDistributedSampler` (torch's `DistributedSampler`, padded to whole batches;
call ``train.sampler.set_epoch(epoch)`` every epoch, also with one worker); validation uses
`ShardedEvalSampler`, which never pads, so that each image is evaluated exactly once across ranks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from pipeline.data import storage
from pipeline.data.augment_spec import parse_augment
from pipeline.data.coco_index import ImageRecord
from pipeline.data.dataset import DetectionDataset, collate_fn
from pipeline.data.layout import LabelMap
from pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD, AugmentOptions, DetectionTransform
from pipeline.data.validate import validate_dataset


class ShardedEvalSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...``: disjoint shards covering every index once, unpadded."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.indices = list(range(rank, num_samples, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class FullBatchDistributedSampler(DistributedSampler):
    """torch's `DistributedSampler`, padded so that every rank's shard is a whole number of batches.

    Each epoch (``set_epoch``) every image is seen at least once across all ranks; the fewer than
    ``world_size * batch_size`` repeats fill the last batches, so no image is dropped and every
    batch has exactly ``batch_size`` images.
    """

    def __init__(
        self, dataset, batch_size: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        per_step = batch_size * num_replicas
        self.num_samples = math.ceil(len(dataset) / per_step) * batch_size  # per rank
        self.total_size = self.num_samples * num_replicas  # the parent pads its index list to this
        self._skip = 0

    def skip(self, count: int) -> None:
        """The next pass starts `count` indices into this epoch's shard (a run resumed inside an epoch)."""
        self._skip = count

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self._skip :])


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


def _seed_worker(worker_id: int, rank: int) -> None:
    """Give each DataLoader worker (of each rank, each epoch) its own augmentation stream."""
    info = torch.utils.data.get_worker_info()
    seed = (torch.initial_seed() + 1_000_003 * rank) % 2**32  # initial_seed differs per worker and epoch
    dataset = info.dataset if info is not None else None
    if isinstance(dataset, DetectionDataset):
        dataset.transform.reseed(seed)


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
) -> DataLoaders:
    """Train and val loaders of ``dataset_dir`` for worker ``rank`` of ``world_size``.

    ``validate`` runs `validate_dataset` first and raises `DatasetError` on fatal problems
    (``check_images=False`` skips decoding every image, e.g. on workers after the driver checked).
    ``pin_memory`` (for a GPU) makes the host-to-device copy asynchronous. ``cache_dir`` keeps a remote dataset's
    images on this node's disk after their first read. ``engine="ray"`` decodes and augments in Ray Data tasks on
    any cluster CPU (`pipeline.data.ray_engine`, each task reserving ``ray_cpus_per_task``), with the same samplers.
    Train batches have exactly ``batch_size`` images and every image is seen at least once per
    epoch (see `FullBatchDistributedSampler`). ``train.dataset.label_map`` and ``val.dataset.coco``
    give the label map and the validation ground truth.
    """
    if validate:
        validate_dataset(dataset_dir, check_images=check_images).raise_if_fatal()
    train_set = DetectionDataset(dataset_dir, "train", None, label_map, cache_dir=cache_dir)
    options = training_augmentation(augment or parse_augment("default"), train_set.records, image_size)
    train_set.transform = DetectionTransform(image_size, mean, std, train=True, options=options, seed=seed + rank)
    val_tf = DetectionTransform(image_size, mean, std, train=False)
    val_set = DetectionDataset(dataset_dir, "val", val_tf, train_set.label_map, cache_dir=cache_dir)
    train_sampler = FullBatchDistributedSampler(train_set, batch_size, world_size, rank, shuffle=True, seed=seed)
    val_sampler = ShardedEvalSampler(len(val_set), rank, world_size)
    if engine == "ray":
        from pipeline.data.ray_engine import RayDataLoader

        options = {"seed": seed, "cpus_per_task": ray_cpus_per_task, "prefetch_batches": prefetch_factor}
        return DataLoaders(
            RayDataLoader(train_set, train_sampler, batch_size, **options),
            RayDataLoader(val_set, val_sampler, val_batch_size or batch_size, **options),
        )
    common = {"num_workers": num_workers, "collate_fn": collate_fn, "pin_memory": pin_memory}
    if num_workers > 0:  # processes that outlive an epoch, each `prefetch_factor` batches ahead
        common.update(persistent_workers=True, prefetch_factor=prefetch_factor)
        if storage.is_remote(dataset_dir):  # the AWS SDK is not fork-safe once used (the JSON was read here)
            common.update(multiprocessing_context="forkserver")
    train = DataLoader(
        train_set,
        batch_size=batch_size,
        sampler=train_sampler,
        worker_init_fn=functools.partial(_seed_worker, rank=rank),
        **common,
    )
    val = DataLoader(val_set, batch_size=val_batch_size or batch_size, sampler=val_sampler, **common)
    return DataLoaders(train, val)
