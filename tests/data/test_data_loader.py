"""Dataset items, collation, label maps and per-rank loaders (DDP sharding, each image once)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.data import (
    DetectionDataset,
    DetectionTransform,
    GlobalBatchSampler,
    LabelMap,
    ShardedEvalSampler,
    build_dataloaders,
    collate_fn,
    load_label_map,
    to_original_coordinates,
)
from pipeline.evaluation import evaluate_coco, merge_prediction_shards


def test_label_map_is_sorted_contiguous_and_json_round_trips():
    label_map = LabelMap.from_categories([{"id": 9, "name": "c"}, {"id": 2, "name": "a"}, {"id": 5, "name": "b"}])
    assert label_map.names == ("a", "b", "c") and label_map.category_ids == (2, 5, 9)
    assert [label_map.category_id_to_label(c) for c in (2, 5, 9)] == [0, 1, 2]
    assert [label_map.label_to_category_id(k) for k in range(3)] == [2, 5, 9]
    assert LabelMap.from_dict(json.loads(json.dumps(label_map.to_dict()))) == label_map
    with pytest.raises(KeyError, match="unknown category id 4"):
        label_map.category_id_to_label(4)
    with pytest.raises(KeyError, match="label 3"):
        label_map.label_to_category_id(3)
    with pytest.raises(ValueError, match="unknown LabelMap keys"):
        LabelMap.from_dict({"ids": [1], "names": ["a"]})


def test_dataset_item_format(make_dataset):
    ds = make_dataset()
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    dataset = DetectionDataset(ds, "train", DetectionTransform((64, 96), mean, std))
    assert dataset.label_map == load_label_map(ds) and dataset.label_map.names == ("cat", "dog", "bird")
    image, target = dataset[1]  # image id 2: 80x56, boxes [2,3,20,15] (cat, id 1) and [30.5,10,25.5,30] (bird, id 7)
    assert image.shape == (3, 64, 96) and image.dtype == torch.float32
    assert image.min() >= -1.0 and image.max() <= 1.0
    assert target["image_id"] == 2 and target["orig_size"] == (56, 80)
    assert target["scale"] == pytest.approx(min(64 / 56, 96 / 80))
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [0, 2]
    assert target["boxes"].dtype == torch.float32
    np.testing.assert_allclose(target["boxes"] / target["scale"], [[2, 3, 22, 18], [30.5, 10, 56, 40]], atol=0.3)
    image, target = dataset[4]  # an image without boxes is kept
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_crowd_annotations_are_left_out_of_training(make_dataset):
    def plant(train, val):
        train["annotations"][0]["iscrowd"] = 1

    dataset = DetectionDataset(make_dataset(plant), "train", DetectionTransform(64))
    assert len(dataset.records[0].boxes) == 1 and len(dataset.coco.imgToAnns[1]) == 2


def test_collate_stacks_images_and_keeps_targets():
    batch = [(torch.zeros(3, 8, 8), {"image_id": i}) for i in range(3)]
    images, targets = collate_fn(batch)
    assert images.shape == (3, 3, 8, 8) and [t["image_id"] for t in targets] == [0, 1, 2]


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_eval_shards_cover_every_image_exactly_once(world_size):
    shards = [list(ShardedEvalSampler(10, rank, world_size)) for rank in range(world_size)]
    assert sorted(i for shard in shards for i in shard) == list(range(10))
    with pytest.raises(ValueError, match="rank"):
        ShardedEvalSampler(10, world_size, world_size)


def test_loaders_for_two_ranks(make_dataset):
    ds = make_dataset()
    loaders = [build_dataloaders(ds, 64, batch_size=2, rank=r, world_size=2, seed=3) for r in range(2)]
    train_ids, val_ids = [], []
    for train, val in loaders:
        assert isinstance(train.sampler.sampler, GlobalBatchSampler)  # inside the `SeededSampler`
        train.sampler.set_epoch(0)
        batches = list(train)
        assert all(images.shape == (2, 3, 64, 64) for images, _ in batches)  # fixed batch size
        train_ids += [t["image_id"] for _, targets in batches for t in targets]
        val_ids += [t["image_id"] for _, targets in val for t in targets]
    # 5 images, 2 ranks x 2 full batches: every image at least once, 3 repeats to fill the batches
    assert set(train_ids) == {1, 2, 3, 4, 5} and len(train_ids) == 8
    assert sorted(val_ids) == [101, 102, 103, 104]  # each val image exactly once, no padding


def test_single_process_loader_with_workers_and_fixed_batches(make_dataset):
    train, val = build_dataloaders(make_dataset(), (64, 64), batch_size=2, num_workers=2, seed=0)
    epochs = []
    for epoch in range(2):
        train.sampler.set_epoch(epoch)
        epochs.append([t["image_id"] for images, targets in train for t in targets if images.shape[0] == 2])
    assert all(len(ids) == 6 and set(ids) == {1, 2, 3, 4, 5} for ids in epochs)  # 3 full batches, all images
    assert epochs[0] != epochs[1]  # reshuffled
    batch_sizes = [images.shape[0] for images, _ in val]
    assert batch_sizes == [2, 2]


def test_an_images_augmentation_depends_on_the_seed_the_epoch_and_the_image_only(make_dataset):
    """Seeded per (run seed, epoch, index) by the sampler: with or without worker processes the same tensors; a pass
    resumed 2 images into the epoch gives the rest of the straight pass (an exact mid-epoch resume); another epoch
    or another run seed augments differently."""
    dataset = make_dataset()

    def items(num_workers: int = 0, epoch: int = 1, skip: int = 0, seed: int = 0) -> list[tuple[int, torch.Tensor]]:
        train = build_dataloaders(dataset, 64, batch_size=2, num_workers=num_workers, seed=seed).train
        train.sampler.set_epoch(epoch)
        train.sampler.skip(skip)
        return [(t["image_id"], image) for images, targets in train for image, t in zip(images, targets, strict=True)]

    def same(a, b) -> bool:
        return len(a) == len(b) and all(i == j and torch.equal(x, y) for (i, x), (j, y) in zip(a, b, strict=True))

    straight = items()
    assert len(straight) == 6 and same(items(num_workers=2), straight)
    assert same(items(skip=2), straight[2:])
    for other in (items(epoch=2), items(seed=1)):
        by_id = dict(other)
        assert not any(torch.equal(image, by_id[image_id]) for image_id, image in straight)


def test_predictions_map_back_to_original_coordinates(make_dataset):
    """Eval loader -> detections equal to the targets (model px) -> original px -> AP50 1.0 over 2 ranks."""
    ds = make_dataset()
    shards = []
    for rank in range(2):
        _, val = build_dataloaders(ds, 64, batch_size=3, rank=rank, world_size=2, validate=False)
        for _, targets in val:
            detections = [
                {"boxes": t["boxes"], "scores": torch.ones(len(t["boxes"])), "labels": t["labels"]} for t in targets
            ]
            shards.append(to_original_coordinates(detections, targets))
    predictions = merge_prediction_shards(shards)
    assert [p["image_id"] for p in predictions] == [101, 102, 103, 104]
    coco = val.dataset.coco
    first = predictions[0]["boxes"][0]
    x, y, w, h = coco.imgToAnns[101][0]["bbox"]
    np.testing.assert_allclose(first, [x, y, x + w, y + h], atol=0.5)
    metrics = evaluate_coco(coco, predictions, val.dataset.label_map)
    assert metrics["AP50"] == pytest.approx(1.0) and metrics["AP"] > 0.8
