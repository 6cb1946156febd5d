"""Post-processing: class-aware NMS, per-image caps, soft-NMS, clipping; anchors and box coding."""

from __future__ import annotations

import pytest
import torch

import effdet_core as E
from effdet_core import box_coder
from effdet_core.postprocess import PostprocessConfig, postprocess


def _case():
    anchors = torch.tensor([[0.0, 0, 40, 40], [2, 2, 42, 42], [60, 60, 100, 100], [0, 0, 40, 40]])
    codes = torch.zeros(2, 4, 4)
    # logits [B=2, N=4, C=2]: anchors 0 and 1 overlap (IoU ~0.82) with the same class; anchor 3 duplicates
    # anchor 0 but scores class 1, which NMS must keep (class-aware).
    logits = torch.full((2, 4, 2), -10.0)
    logits[0, 0, 0], logits[0, 1, 0], logits[0, 2, 1], logits[0, 3, 1] = 3.0, 2.0, 1.0, 0.5
    logits[1, 2, 0] = 4.0
    return logits, codes, anchors


def test_class_aware_batched_nms_per_image():
    logits, codes, anchors = _case()
    results = postprocess(logits, codes, anchors, (128, 128), PostprocessConfig(score_threshold=0.05))
    first, second = results
    assert first["labels"].tolist() == [0, 1, 1]
    torch.testing.assert_close(first["boxes"][0], anchors[0])
    assert (first["scores"][:-1] >= first["scores"][1:]).all()
    assert second["labels"].tolist() == [0] and torch.equal(second["boxes"][0], anchors[2])


def test_max_detections_caps_each_image():
    logits, codes, anchors = _case()
    results = postprocess(logits, codes, anchors, (128, 128), PostprocessConfig(max_detections=1))
    assert [len(r["boxes"]) for r in results] == [1, 1]


def test_soft_nms_decays_overlapping_same_class_scores():
    logits, codes, anchors = _case()
    hard = postprocess(logits, codes, anchors, (128, 128), PostprocessConfig(score_threshold=0.05))[0]
    soft = postprocess(logits, codes, anchors, (128, 128), PostprocessConfig(soft_nms=True))[0]
    assert len(soft["boxes"]) > len(hard["boxes"])  # the overlapping box survives with a lower score
    kept = soft["scores"][(soft["boxes"] == anchors[1]).all(dim=1)]
    assert len(kept) == 1 and kept[0] < torch.sigmoid(torch.tensor(2.0)) * 0.5


def test_boxes_are_clipped_to_the_image():
    logits, codes, anchors = _case()
    codes[:, 2, 2:] = 2.0  # grow the box at anchor 2 far past the 128 px image
    results = postprocess(logits, codes, anchors, (128, 128), PostprocessConfig())
    for r in results:
        assert r["boxes"].min() >= 0 and r["boxes"].max() <= 128


def test_box_coding_round_trips():
    anchors = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 8.0, 8.0]])
    boxes = torch.tensor([[12.0, 18.0, 60.0, 45.0], [1.0, 2.0, 5.0, 7.0]])
    torch.testing.assert_close(box_coder.decode(box_coder.encode(boxes, anchors), anchors), boxes)


def test_anchor_layout_matches_head_channels():
    config = E.get_config("d0", image_size=256)
    anchors = E.generate_anchors(config, (256, 256))
    assert anchors.shape == (sum((256 // 2**lvl) ** 2 for lvl in range(3, 8)) * 9, 4)
    # First location of P3: centre (4, 4), nine shapes scale-major: base size 4 * 8 = 32 px square first.
    torch.testing.assert_close(anchors[0], torch.tensor([-12.0, -12.0, 20.0, 20.0]))
    widths = anchors[:9, 2] - anchors[:9, 0]
    torch.testing.assert_close(widths[3] / widths[0], torch.tensor(2 ** (1 / 3)))


def test_soft_nms_matches_the_reference_gaussian_soft_nms():
    """Our batched soft-NMS against effdet's `batched_soft_nms` (the reference evaluation's): the same boxes kept,
    in the same order, with the same decayed scores, on many overlapping boxes of three classes."""
    from effdet.soft_nms import batched_soft_nms

    from effdet_core.postprocess import _soft_nms

    generator = torch.Generator().manual_seed(0)
    k = 300
    corners = torch.rand(k, 2, generator=generator) * 96
    boxes = torch.cat([corners, corners + 8 + torch.rand(k, 2, generator=generator) * 24], dim=1)  # xyxy
    scores = torch.rand(k, generator=generator)
    classes = torch.randint(0, 3, (k,), generator=generator)
    config = PostprocessConfig(soft_nms=True, max_detections=k, score_threshold=0.0)

    ours = _soft_nms(boxes[None], scores[None], classes[None], config)[0]
    index, reference_scores = batched_soft_nms(boxes, scores, classes, sigma=config.soft_nms_sigma)
    reference_scores, order = reference_scores.sort(descending=True)  # effdet orders by class, then score
    index = index[order]
    assert 0 < len(index) < k  # some boxes decayed below the 1e-3 floor: the comparison covers pruning too
    assert torch.equal(ours["boxes"], boxes[index]) and torch.equal(ours["labels"], classes[index])
    torch.testing.assert_close(ours["scores"], reference_scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("batch", "anchors", "classes", "k"),
    [(2, 3000, 7, 500), (1, 3000, 7, 500), (2, 300, 7, 300), (2, 300, 7, 1000), (2, 3000, 1, 500), (1, 50, 3, 150)],
)
def test_two_stage_top_k_keeps_the_same_scores_as_one_top_k_over_all_pairs(batch, anchors, classes, k):
    """The (anchor, class) pairs kept before NMS: the two-stage selection (best anchors first; one top-k when k >= N
    or C == 1) must keep the same sorted logits as one top-k over every pair, each kept pair distinct and pointing
    at its own logit and box code, with random logits and with many ties (rounded logits; tied pairs may differ)."""
    from effdet_core.postprocess import select_top_k

    for seed in range(4):
        generator = torch.Generator().manual_seed(seed)
        logits = torch.randn(batch, anchors, classes, generator=generator)
        if seed % 2:
            logits = logits.round(decimals=1)
        codes = torch.randn(batch, anchors, 4, generator=generator)
        top, anchor_index, class_index, picked_codes = select_top_k(logits, codes, k)
        kept = min(k, anchors * classes)
        assert torch.equal(top, torch.topk(logits.reshape(batch, -1), k=kept, dim=1).values)
        for b in range(batch):
            assert torch.equal(logits[b, anchor_index[b], class_index[b]], top[b])
            assert torch.equal(picked_codes[b], codes[b, anchor_index[b]])
            assert len(set(zip(anchor_index[b].tolist(), class_index[b].tolist(), strict=True))) == kept
