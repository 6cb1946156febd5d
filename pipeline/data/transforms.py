"""Albumentations pipelines for training and evaluation, with boxes kept valid throughout.

Training: fit the image into the model input, scale jitter, pad + random crop back to the input,
horizontal flip, colour jitter. Evaluation: resize the longest side to fit, pad bottom/right, so
that ``boxes / scale`` maps model-input boxes back to original pixels exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import albumentations as A
import cv2
import numpy as np
import torch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AugmentOptions:
    """Training augmentation. The official COCO recipe uses scale 0.1-2.0; a milder default
    range suits small datasets and short runs."""

    scale_min: float = 0.5  # scale jitter relative to "fits the model input"
    scale_max: float = 1.5
    hflip_prob: float = 0.5
    brightness: float = 0.2  # colour jitter factors are drawn from [1 - x, 1 + x]
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02  # hue shift in [-x, x] (fraction of the colour circle)
    color_prob: float = 0.8
    min_visibility: float = 0.25  # a box cropped to less than this fraction of its area is dropped
    min_box_size: float = 2.0  # boxes narrower or lower than this (model-input px) are dropped

    def __post_init__(self) -> None:
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"need 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")
        for name in ("hflip_prob", "color_prob", "min_visibility"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation", "min_box_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")

    @classmethod
    def from_dict(cls, data: dict) -> AugmentOptions:
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"unknown augmentation options {unknown}; valid: {valid}")
        return cls(**data)


class DetectionTransform:
    """``(image uint8 [h,w,3], boxes [n,4] xyxy px, labels [n]) -> (image [3,H,W], boxes, labels, scale)``.

    ``scale`` is model-input px per original px of the (deterministic) fit-to-input resize; for
    training it is nominal, since scale jitter changes it per sample.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int],
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        train: bool = False,
        options: AugmentOptions | None = None,
        seed: int | None = None,
    ) -> None:
        self.height, self.width = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.train = train
        self.options = options or AugmentOptions()
        fill = tuple(round(255 * m) for m in self.mean)  # pad with the mean: normalises to 0
        steps = self._train_steps(fill) if train else self._eval_steps(fill)
        steps.append(A.Normalize(mean=self.mean, std=self.std, max_pixel_value=255.0))
        bbox_params = A.BboxParams(
            format="pascal_voc",
            label_fields=["labels"],
            min_visibility=self.options.min_visibility if train else 0.0,
            clip=True,
            filter_invalid_bboxes=True,
        )
        self.pipeline = A.Compose(steps, bbox_params=bbox_params, seed=seed)

    def _fit(self) -> A.LongestMaxSize:
        return A.LongestMaxSize(max_size_hw=(self.height, self.width), interpolation=cv2.INTER_LINEAR)

    def _eval_steps(self, fill: tuple[int, ...]) -> list:
        pad = A.PadIfNeeded(self.height, self.width, position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=fill)
        return [self._fit(), pad]

    def _train_steps(self, fill: tuple[int, ...]) -> list:
        o = self.options
        h, w = self.height, self.width
        o_color = A.ColorJitter(
            brightness=(1 - o.brightness, 1 + o.brightness),
            contrast=(1 - o.contrast, 1 + o.contrast),
            saturation=(1 - o.saturation, 1 + o.saturation),
            hue=(-o.hue, o.hue),
            p=o.color_prob,
        )
        return [
            self._fit(),
            A.RandomScale(scale_limit=(o.scale_min - 1.0, o.scale_max - 1.0), p=1.0),
            A.PadIfNeeded(h, w, position="random", border_mode=cv2.BORDER_CONSTANT, fill=fill),
            A.RandomCrop(h, w),
            A.HorizontalFlip(p=o.hflip_prob),
            o_color,
        ]

    def _pad_thin(self, image: np.ndarray) -> np.ndarray:
        """Pad a very thin image (bottom/right, mean colour) so scale jitter keeps every side >= 1 px.

        albumentations' RandomScale truncates ``int(side * scale)``, so the fitted short side must
        be at least ``1 / scale_min``; padding can lower the fit factor, hence the short loop.
        """
        h, w = image.shape[:2]
        for _ in range(4):
            need = int(np.ceil((1.0 / self.options.scale_min + 1.0) / self.scale_for(h, w))) + 1  # original px
            if min(h, w) >= need:
                break
            h, w = max(h, need), max(w, need)
        if (h, w) == image.shape[:2]:
            return image
        padded = np.empty((h, w, 3), dtype=image.dtype)
        padded[...] = np.array([round(255 * m) for m in self.mean], dtype=image.dtype)
        padded[: image.shape[0], : image.shape[1]] = image
        return padded

    def reseed(self, seed: int) -> None:
        """New random state (called per DataLoader worker so workers do not repeat each other)."""
        self.pipeline.set_random_seed(seed)

    def scale_for(self, orig_height: int, orig_width: int) -> float:
        """Model-input px per original px of the fit-to-input resize."""
        return min(self.height / orig_height, self.width / orig_width)

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray, float]:
        orig_h, orig_w = image.shape[:2]
        boxes, labels = _valid_boxes(np.asarray(boxes, np.float32).reshape(-1, 4), labels, orig_w, orig_h, 0.0)
        if self.train:
            image = self._pad_thin(image)
        out = self.pipeline(image=image, bboxes=boxes, labels=labels)
        out_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        out_labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
        min_size = self.options.min_box_size if self.train else 0.0
        out_boxes, out_labels = _valid_boxes(out_boxes, out_labels, self.width, self.height, min_size)
        tensor = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))  # [3, H, W] float32
        return tensor, out_boxes, out_labels, self.scale_for(orig_h, orig_w)


def _valid_boxes(
    boxes: np.ndarray, labels: np.ndarray, width: float, height: float, min_size: float
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [n,4] xyxy clipped to the image, keeping only those with positive (>= min_size) sides."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    boxes = boxes.copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0.0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0.0, height)
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    keep = np.isfinite(boxes).all(axis=1) & (bw > 0) & (bh > 0) & (bw >= min_size) & (bh >= min_size)
    return boxes[keep], labels[keep]
