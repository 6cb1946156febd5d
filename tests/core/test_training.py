"""Training behaviour: gradients everywhere, finite losses (also with no boxes), and overfitting one batch."""

from __future__ import annotations

import pytest
import torch

import effdet_core as E

from .conftest import random_targets, tiny_config

NECK_OPTIONS = [("bifpn", "fast"), ("bifpn", "softmax"), ("bifpn", "sum"), ("panet", "fast"), ("fpn", "fast")]


@pytest.mark.parametrize("feature_network,fusion", NECK_OPTIONS)
def test_every_parameter_gets_a_finite_gradient(feature_network, fusion):
    model = E.create_model(tiny_config(feature_network=feature_network, fusion=fusion), num_classes=4)
    trainer = E.EfficientDetForTraining(model).train()
    losses = trainer(torch.randn(2, 3, 128, 128), random_targets(2, 128, 4))
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for p in model.neck.parameters())


def test_images_without_boxes_give_finite_loss_and_no_box_loss():
    trainer = E.EfficientDetForTraining(E.create_model(tiny_config(), num_classes=3)).train()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = trainer(torch.randn(2, 3, 128, 128), [empty, empty])
    assert torch.isfinite(losses["loss"]) and losses["class_loss"] > 0
    assert losses["box_loss"] == 0
    losses["loss"].backward()
    mixed = trainer(torch.randn(2, 3, 128, 128), [empty, random_targets(1, 128, 3)[0]])
    assert torch.isfinite(mixed["loss"]) and mixed["box_loss"] > 0


def test_tiny_model_overfits_one_batch():
    model = E.create_model(tiny_config(), num_classes=3)
    trainer = E.EfficientDetForTraining(model).train()
    images, targets = torch.randn(2, 3, 128, 128), random_targets(2, 128, 3, max_boxes=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = trainer(images, targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.1 * first, f"loss went {first:.3f} -> {loss.item():.3f}"
    # The overfitted model finds the training boxes again.
    model.eval()
    detections = E.EfficientDetForPrediction(model)(images)[0]
    best = detections["boxes"][0]
    ious = torch.stack([_iou(best, gt) for gt in targets[0]["boxes"]])
    assert ious.max() > 0.5


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt, rb = torch.maximum(a[:2], b[:2]), torch.minimum(a[2:], b[2:])
    inter = (rb - lt).clamp(min=0).prod()
    return inter / ((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter)
