"""Focal classification loss and Huber box loss over all anchors of a batch, normalised by positives + 1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from .assign import Assignment
from .config import LossConfig  # noqa: F401 (the loss settings live with the other configs)


def flatten_outputs(outputs: list[torch.Tensor], per_anchor: int) -> torch.Tensor:
    """List over levels of [B, A*K, H, W] -> [B, N, K] in anchor order (level, y, x, anchor)."""
    batch = outputs[0].shape[0]
    return torch.cat([o.permute(0, 2, 3, 1).reshape(batch, -1, per_anchor) for o in outputs], dim=1)


def detection_loss(
    class_logits: torch.Tensor, box_codes: torch.Tensor, assignment: Assignment, config: LossConfig
) -> dict[str, torch.Tensor]:
    """class_logits [B, N, C], box_codes [B, N, 4] -> {"loss", "class_loss", "box_loss"} (scalars)."""
    num_classes = class_logits.shape[-1]
    positive = assignment.positive
    normalizer = positive.sum().to(class_logits.dtype) + 1.0

    # One-hot targets [B, N, C]: the matched class for positives, all zeros for negatives.
    one_hot = F.one_hot(assignment.labels, num_classes).to(class_logits.dtype) * positive[..., None]
    if config.label_smoothing:
        one_hot = one_hot * (1.0 - config.label_smoothing) + 0.5 * config.label_smoothing
    class_loss = (
        sigmoid_focal_loss(
            class_logits.float(), one_hot.float(), alpha=config.alpha, gamma=config.gamma, reduction="sum"
        )
        / normalizer
    )

    huber = F.huber_loss(box_codes.float(), assignment.box_targets.float(), delta=config.delta, reduction="none")
    box_loss = (huber * positive[..., None]).sum() / (normalizer * 4.0)
    return {
        "loss": class_loss + config.box_loss_weight * box_loss,
        "class_loss": class_loss,
        "box_loss": box_loss,
    }
