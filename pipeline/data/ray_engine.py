"""`data.engine: ray`: images decoded and augmented by Ray Data tasks, on any CPU of the cluster, streamed to the
training worker in order.

A rank keeps the DataLoader engine's sampling exactly (the same `GlobalBatchSampler` and
`ShardedEvalSampler`: the same images per rank and epoch, padded train shards, unpadded validation, the same
resume position) and its augmentation seeds (`SeededSampler`: by run seed, epoch and index), so both engines give
the same batches. What moves is the work: each pass becomes a Ray Dataset of this rank's `(index, seed)` items,
mapped in batches by `prepare_batch` in Ray Data tasks (which Ray places on any node with a free CPU, CPU-only
nodes included) and read back in the sampler's order.

Batches travel as numpy: `image` float32 [B, 3, H, W], and per image its boxes [n, 4] and labels [n] as ragged
(object) columns.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import numpy as np
import torch

from pipeline.data.dataset import DetectionDataset, Target
from pipeline.data.samplers import SeededSampler


def prepare_batch(batch: dict[str, np.ndarray], dataset: DetectionDataset) -> dict[str, np.ndarray]:
    """Ray Data UDF: items `{"index", "seed"}` -> decoded, augmented, normalised images and their targets."""
    rows = [dataset[int(index), int(seed)] for index, seed in zip(batch["index"], batch["seed"], strict=True)]
    targets = [target for _, target in rows]
    windows = {}
    if "window" in targets[0]:  # a tiled dataset: every item is a window or an image's whole pass
        windows = {
            "window": np.array([t["window"] for t in targets], np.int64),  # [B, 4] x0, y0, x1, y1 original px
            "whole": np.array([t["whole"] for t in targets], bool),
        }
    return {
        "image": np.stack([image.numpy() for image, _ in rows]),  # float32 [B, 3, H, W]
        "boxes": _ragged([t["boxes"].numpy() for t in targets]),  # B x float32 [n, 4]
        "labels": _ragged([t["labels"].numpy() for t in targets]),  # B x int64 [n]
        "image_id": np.array([t["image_id"] for t in targets], np.int64),
        "scale": np.array([t["scale"] for t in targets], np.float64),
        "orig_size": np.array([t["orig_size"] for t in targets], np.int64),  # [B, 2] (h, w)
        **windows,
    }


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out


def to_torch(batch: dict[str, np.ndarray]) -> tuple[torch.Tensor, list[Target]]:
    """A Ray Data batch -> what `collate_fn` makes of DataLoader items: images [B, 3, H, W] and target dicts."""
    targets = [
        {
            "boxes": torch.tensor(np.asarray(boxes, np.float32).reshape(-1, 4)),  # copies: Ray's buffers are read-only
            "labels": torch.tensor(np.asarray(labels, np.int64).reshape(-1)),
            "image_id": int(image_id),
            "scale": float(scale),
            "orig_size": (int(size[0]), int(size[1])),
        }
        for boxes, labels, image_id, scale, size in zip(
            batch["boxes"], batch["labels"], batch["image_id"], batch["scale"], batch["orig_size"], strict=True
        )
    ]
    if "window" in batch:
        for target, window, whole in zip(targets, batch["window"], batch["whole"], strict=True):
            target.update(window=tuple(int(v) for v in window), whole=bool(whole))
    return torch.from_numpy(np.array(batch["image"], np.float32, copy=True)), targets  # writable, as a DataLoader's


class RayDataLoader:
    """What the training loop reads of a DataLoader (`sampler`, `batch_size`, `dataset`, `len`, iteration), with the
    work done by Ray Data. `cpus_per_task` is what each Ray Data task reserves (`data.ray_cpus_per_task`)."""

    def __init__(
        self,
        dataset: DetectionDataset,
        sampler: SeededSampler,
        batch_size: int,
        cpus_per_task: float = 1.0,
        prefetch_batches: int = 4,
    ) -> None:
        self.dataset, self.sampler, self.batch_size = dataset, sampler, batch_size
        self.cpus_per_task, self.prefetch_batches = cpus_per_task, prefetch_batches

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def items(self) -> list[dict[str, int]]:
        """This pass's items in the sampler's order (after a resume's skip), each with its augmentation seed."""
        return [{"index": index, "seed": seed} for index, seed in self.sampler]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[Target]]]:
        import ray.data

        items = self.items()
        if not items:
            return
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # the sampler's order: exact shards and resume
        context.enable_progress_bars = False  # a pass per epoch: the training's own progress lines say enough
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        dataset = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / self.batch_size))
        prepared = dataset.map_batches(
            prepare_batch,
            fn_kwargs={"dataset": self.dataset},
            batch_size=self.batch_size,
            batch_format="numpy",
            num_cpus=self.cpus_per_task,
            zero_copy_batch=True,
        )
        for batch in prepared.iter_batches(
            batch_size=self.batch_size, batch_format="numpy", prefetch_batches=self.prefetch_batches
        ):
            yield to_torch(batch)
