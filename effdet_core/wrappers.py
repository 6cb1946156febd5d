"""Training and prediction wrappers around the bare network: anchors + loss, and decode + NMS."""

from __future__ import annotations

import torch
from torch import nn

from .anchors import AnchorCache
from .assign import assign, pad_targets
from .loss import LossConfig, detection_loss, flatten_outputs
from .model import EfficientDet
from .postprocess import PostprocessConfig, postprocess


class EfficientDetForTraining(nn.Module):
    """(images [B,3,H,W], targets) -> {"loss", "class_loss", "box_loss"}.

    targets: one dict per image with "boxes" [n, 4] xyxy in input pixels and "labels" [n] int64 in
    [0, num_classes). n may be 0. Targets are checked before use (`validate=False` skips the check).
    """

    def __init__(self, model: EfficientDet, loss_config: LossConfig | None = None, *, validate: bool = True):
        super().__init__()
        self.model = model
        self.loss_config = loss_config or LossConfig()
        self.validate = validate
        self.anchors = AnchorCache(model.config)

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        image_size = tuple(images.shape[-2:])
        if len(targets) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(targets)} targets")
        boxes, labels, valid = pad_targets(targets, images.device)
        if self.validate:
            validate_targets(boxes, labels, valid, image_size, self.model.num_classes)
        class_outputs, box_outputs = self.model(images)
        anchors = self.anchors.get(image_size, images.device)
        with torch.no_grad():
            assignment = assign(anchors, boxes, labels, valid, self.loss_config.match_threshold)
        class_logits = flatten_outputs(class_outputs, self.model.num_classes)  # [B, N, C]
        box_codes = flatten_outputs(box_outputs, 4)  # [B, N, 4]
        return detection_loss(class_logits, box_codes, assignment, self.loss_config)


class EfficientDetForPrediction(nn.Module):
    """images [B,3,H,W] -> per image {"boxes" [k,4] xyxy input px, "scores" [k], "labels" [k] 0-based}."""

    def __init__(self, model: EfficientDet, postprocess_config: PostprocessConfig | None = None):
        super().__init__()
        self.model = model
        self.postprocess_config = postprocess_config or PostprocessConfig()
        self.anchors = AnchorCache(model.config)

    def network(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B,3,H,W] -> (class_logits [B,N,C], box_codes [B,N,4]), flattened in anchor order."""
        class_outputs, box_outputs = self.model(images)
        return flatten_outputs(class_outputs, self.model.num_classes), flatten_outputs(box_outputs, 4)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        image_size = tuple(images.shape[-2:])
        class_logits, box_codes = self.network(images)
        anchors = self.anchors.get(image_size, images.device)
        return postprocess(class_logits, box_codes, anchors, image_size, self.postprocess_config)


def validate_targets(
    boxes: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor,
    image_size: tuple[int, int],
    num_classes: int,
    tolerance: float = 1.0,
) -> None:
    """Raises ValueError naming the first bad box (image index, box index): degenerate, outside the image
    (beyond `tolerance` px), non-finite, or with a label outside [0, num_classes). boxes [B, G, 4] xyxy."""
    height, width = image_size
    x1, y1, x2, y2 = boxes.unbind(-1)
    problems = {
        "is not finite": ~torch.isfinite(boxes).all(-1),
        "is degenerate (x2 <= x1 or y2 <= y1)": (x2 <= x1) | (y2 <= y1),
        f"lies outside the {width}x{height} image": (x1 < -tolerance)
        | (y1 < -tolerance)
        | (x2 > width + tolerance)
        | (y2 > height + tolerance),
        f"has a label outside [0, {num_classes})": (labels < 0) | (labels >= num_classes),
    }
    bad_any = torch.zeros_like(valid)
    for mask in problems.values():
        bad_any |= mask & valid
    if not bool(bad_any.any()):  # one device sync per batch; the details below only run on error
        return
    for problem, mask in problems.items():
        bad = (mask & valid).nonzero()
        if len(bad):
            image, box = bad[0].tolist()
            raise ValueError(
                f"target of image {image}, box {box}: {boxes[image, box].tolist()} label {int(labels[image, box])} "
                f"{problem}"
            )
