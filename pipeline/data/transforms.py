"""Albumentations pipelines for training and evaluation, with boxes kept valid throughout.

Training (`AugmentOptions`, from a preset or a list of steps: `pipeline.config.augment`): fit the image into
the model input, scale jitter, pad + random crop back to the input, flips, 90-degree rotations, colour jitter.
Evaluation: resize the longest side to fit, pad bottom/right, so that ``boxes / scale`` maps model-input boxes
back to original pixels exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch

from effdet_core.config import IMAGENET_MEAN, IMAGENET_STD  # the one definition: the model config's default
from pipeline.config.augment import AugmentOptions, parse_augment


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
        self.options = options or parse_augment("default")
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
        self.pipeline = A.Compose(steps, bbox_params=bbox_params)
        self.reseed(seed)

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
        steps = [
            self._fit(),
            A.RandomScale(scale_limit=(o.scale_min - 1.0, o.scale_max - 1.0), p=1.0),
            A.PadIfNeeded(h, w, position="random", border_mode=cv2.BORDER_CONSTANT, fill=fill),
            A.RandomCrop(h, w),
            A.HorizontalFlip(p=o.hflip_prob),
            A.VerticalFlip(p=o.vflip_prob),
        ]
        if o.rotate90_prob > 0:
            if h != w:
                raise ValueError(f"rotate90 needs a square model input, got {h}x{w}")
            steps.append(A.RandomRotate90(p=o.rotate90_prob))  # k drawn from 0..3: rotated with prob 3p/4
        return [*steps, o_color]

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

    def reseed(self, seed: int | None) -> None:
        """New random state (per training item: `pipeline.data.samplers.SeededSampler`), one stream for all steps.

        Not albumentations' `Compose.set_random_seed`: it gives every step its own generator seeded alike, so the
        scale, crop, flip and colour draws of an image are the same numbers and move together (measured: demo val
        AP 0.545 with it, and 0.39 where every image is reseeded)."""
        self.pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def scale_for(self, orig_height: int, orig_width: int) -> float:
        """Model-input px per original px of the fit-to-input resize."""
        return min(self.height / orig_height, self.width / orig_width)

    def min_source_size(self, orig_height: int, orig_width: int) -> tuple[int, int]:
        """The fewest source pixels (h, w) this transform can use without upsampling what it would otherwise
        downsample: the fit to the input, times the largest scale jitter in training. A decoder may deliver any
        size from this up to the original (`pipeline.data.decode`)."""
        factor = self.scale_for(orig_height, orig_width) * (max(1.0, self.options.scale_max) if self.train else 1.0)
        factor = min(1.0, factor)
        return math.ceil(orig_height * factor), math.ceil(orig_width * factor)

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
