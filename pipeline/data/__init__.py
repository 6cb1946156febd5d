"""Datasets: the dataset directory format, validation, importers, augmentation and loaders.

See docs/ARCHITECTURE.md ("pipeline.data") for the item format shared with the training loop.
"""

from pipeline.data.coco_index import ImageRecord, load_coco, load_split
from pipeline.data.dataset import DetectionDataset, collate_fn, to_original_coordinates
from pipeline.data.layout import SPLITS, DatasetError, LabelMap, annotation_path, images_dir, load_label_map
from pipeline.data.loader import DataLoaders, FullBatchDistributedSampler, ShardedEvalSampler, build_dataloaders
from pipeline.data.synth import ensure_synthetic_dataset, write_synthetic_dataset
from pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD, AugmentOptions, DetectionTransform
from pipeline.data.validate import Problem, ValidationReport, validate_dataset
from pipeline.data.voc import import_voc

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SPLITS",
    "AugmentOptions",
    "DataLoaders",
    "DatasetError",
    "DetectionDataset",
    "DetectionTransform",
    "FullBatchDistributedSampler",
    "ImageRecord",
    "LabelMap",
    "Problem",
    "ShardedEvalSampler",
    "ValidationReport",
    "annotation_path",
    "build_dataloaders",
    "collate_fn",
    "ensure_synthetic_dataset",
    "images_dir",
    "import_voc",
    "load_coco",
    "load_label_map",
    "load_split",
    "to_original_coordinates",
    "validate_dataset",
    "write_synthetic_dataset",
]
