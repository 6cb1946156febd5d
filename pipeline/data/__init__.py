"""Datasets: the dataset directory format, validation, importers, augmentation and loaders.

See docs/ARCHITECTURE.md ("pipeline.data") for the item format shared with the training loop.

Owns: `layout` (the directory format, label map), `storage` (local paths and object stores), `decode`,
`validate`, `coco_index`, importers (`voc`, `yolo` with `yolo_labels`), demo sets (`synth`, `synth_dense`),
`transforms` (albumentations), `samplers`, `dataset`, `loader` (and the optional `ray_engine`, the only Ray
below `pipeline.cluster`), `fingerprint`, `anchor_fit` and `analyze`. May import: `pipeline.config`,
`pipeline.uri`, `effdet_core`.

Names resolve lazily (PEP 562): importing one submodule does not import albumentations, OpenCV or pycocotools.
"""

from __future__ import annotations

from effdet_core.lazy import lazy_exports

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "ImageRecord": "coco_index",
    "load_coco": "coco_index",
    "load_split": "coco_index",
    "DetectionDataset": "dataset",
    "collate_fn": "dataset",
    "to_original_coordinates": "dataset",
    "dataset_fingerprint": "fingerprint",
    "SPLITS": "layout",
    "DatasetError": "layout",
    "LabelMap": "layout",
    "annotation_path": "layout",
    "images_dir": "layout",
    "load_label_map": "layout",
    "DataLoaders": "loader",
    "GlobalBatchSampler": "samplers",
    "StepLayout": "samplers",
    "SeededSampler": "samplers",
    "ShardedEvalSampler": "samplers",
    "build_dataloaders": "loader",
    "ensure_synthetic_dataset": "synth",
    "write_synthetic_dataset": "synth",
    "IMAGENET_MEAN": "transforms",
    "IMAGENET_STD": "transforms",
    "AugmentOptions": "transforms",
    "DetectionTransform": "transforms",
    "Problem": "validate",
    "ValidationReport": "validate",
    "validate_dataset": "validate",
    "import_voc": "voc",
    "export_yolo": "yolo",
    "import_yolo": "yolo",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
