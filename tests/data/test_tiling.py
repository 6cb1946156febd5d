"""Training and prediction by windows (`data.tiling`): the plan covers every box each epoch, `auto` engages on
large images with small boxes only, and an object on a seam comes out of sliced prediction once, in place."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import ConfigError, load_config
from pipeline.config.tiling import TilingSpec, slice_setting, tiling_from_tag
from pipeline.data.coco_index import ImageRecord
from pipeline.data.tiling import crop_window, eval_tiles, tile_windows, training_tiles
from pipeline.evaluation import merge_tiles


def _record(image_id: int, height: int, width: int, boxes: list[list[float]]) -> ImageRecord:
    array = np.asarray(boxes, np.float32).reshape(-1, 4)
    return ImageRecord(image_id, f"{image_id}.png", width, height, array, np.zeros(len(array), np.int64))


def test_the_grid_covers_the_image_with_full_windows_flush_with_its_edges():
    spec = TilingSpec(100, 0.25)  # stride 75
    windows = tile_windows(230, 310, spec)
    xs, ys = sorted({w[0] for w in windows}), sorted({w[1] for w in windows})
    assert xs == [0, 75, 150, 210] and ys == [0, 75, 130]
    assert all(x1 - x0 == 100 and y1 - y0 == 100 for x0, y0, x1, y1 in windows)
    covered = np.zeros((230, 310), bool)
    for x0, y0, x1, y1 in windows:
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert tile_windows(60, 80, spec) == [(0, 0, 80, 60)]  # smaller than a window: one, padded by crop_window
    image = np.full((60, 80, 3), 9, np.uint8)
    padded = crop_window(image, (0, 0, 80, 60), 100, (1, 2, 3))
    assert padded.shape == (100, 100, 3) and (padded[:60, :80] == 9).all() and (padded[60:, :, 2] == 3).all()


def test_every_box_is_whole_in_some_training_window_each_epoch():
    """Random boxes of 4-90 px (larger than the 32 px overlap, some on seams) and one larger than a window: every
    box lies entirely inside one of the training windows, the too-large one in the whole-image item."""
    rng = np.random.default_rng(0)
    spec = TilingSpec(128, 0.25)
    records = []
    for image_id in range(1, 6):
        height, width = int(rng.integers(300, 700)), int(rng.integers(300, 700))
        sides = rng.uniform(4, 90, (60, 2))
        x0 = rng.uniform(0, width - sides[:, 0])
        y0 = rng.uniform(0, height - sides[:, 1])
        boxes = np.column_stack([x0, y0, x0 + sides[:, 0], y0 + sides[:, 1]]).tolist()
        if image_id == 1:
            boxes.append([10, 10, 10 + 200, 60])  # wider than a window
        records.append(_record(image_id, height, width, boxes))
    tiles = training_tiles(records, spec)
    for record in records:
        mine = [t for t in tiles if t.image_id == record.image_id]
        for box in record.boxes:
            whole_in = [
                t
                for t in mine
                if t.window[0] <= box[0] and t.window[1] <= box[1] and box[2] <= t.window[2] and box[3] <= t.window[3]
            ]
            assert whole_in, (record.image_id, box)
            if box[2] - box[0] > spec.size:
                assert all(t.whole for t in whole_in)
        assert sum(t.whole for t in mine) == (record.image_id == 1)
    kept = tiles[0]  # a window's boxes are in its own px, within it
    assert (
        (kept.boxes >= 0).all() and (kept.boxes[:, 2] <= kept.width).all() and (kept.boxes[:, 3] <= kept.height).all()
    )
    again = training_tiles(records, spec)  # a function of the annotations only: every rank plans the same
    assert [(t.image_id, t.window) for t in again] == [(t.image_id, t.window) for t in tiles]


def test_cut_boxes_follow_the_visible_share_rule_and_empty_windows_are_thinned():
    spec = TilingSpec(100, 0.2)  # stride 80: windows at 0, 80, 160 (flush) over 260 px
    record = _record(1, 100, 260, [[60, 10, 100, 30]])  # 40 px wide: 20 px in window [80, 180)
    tiles = training_tiles([record], spec)
    by_x = {t.window[0]: t for t in tiles}
    assert by_x[0].boxes.tolist() == [[60, 10, 100, 30]]  # whole
    assert by_x[80].boxes.tolist() == [[0, 10, 20, 30]]  # half visible: kept (MIN_VISIBLE 0.5)
    assert by_x[160].boxes.shape == (0, 4)  # empty: the image's first empty window is the one in EMPTY_KEEP kept
    evaluation = eval_tiles([record], spec)
    assert [t.window[0] for t in evaluation if not t.whole] == [0, 80, 160] and evaluation[-1].whole


def _oracle(threshold: float = 0.5):
    """A stand-in network that finds bright pixels (normalised value > threshold in every channel) and answers one
    box around them per image, as `EfficientDetForPrediction` formats detections."""

    class Oracle:
        device = torch.device("cpu")

        def __call__(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
            return predict(images)

    def predict(images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out = []
        for image in images:  # [3, H, W]
            ys, xs = torch.nonzero((image > threshold).all(dim=0), as_tuple=True)
            if len(xs):
                box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
                score = min(0.99, 0.5 + len(xs) / 2000)  # surer of what it sees larger, as a network is
                out.append({"boxes": box, "scores": torch.tensor([score]), "labels": torch.tensor([0])})
            else:
                out.append(
                    {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
                )
        return out

    return Oracle()


@pytest.fixture(scope="module")
def detector():
    from effdet_core import PostprocessConfig, create_model
    from pipeline.data import LabelMap
    from pipeline.registry.package import ModelPackage
    from pipeline.registry.predict import Detector

    model = create_model("lite0", 1, pretrained_backbone=None, image_size=(128, 128))
    package = ModelPackage(model.eval(), LabelMap.from_categories([{"id": 1, "name": "thing"}]), PostprocessConfig())
    detector = Detector(package, batch_size=4, backend="torch")
    detector.predictor = _oracle()
    return detector


def test_an_object_on_a_seam_is_predicted_once_in_its_own_pixels(detector):
    """A 26 x 20 px object across the seam of two 128 px windows (overlap 32 px) of a 300 x 260 image: the right
    window sees a 10 px sliver of it (IoU 0.38 with the whole box, which NMS alone would keep as a second object),
    the left window all of it, the whole-image pass a small copy; `predict` answers one box within 2 px."""
    image = np.zeros((260, 300, 3), np.uint8)
    image[70:90, 80:106] = 255  # x 80-106 crosses x = 96, where the second window starts (stride 96)
    sliced = detector.with_tiling(TilingSpec(128, 0.25))
    [found] = sliced.predict([image])
    assert np.allclose(found["box"], [80, 70, 106, 90], atol=2), found
    whole = detector.predict([image])  # without slicing: the whole image fitted into 128 px, boxes mapped back
    assert len(whole) == 1 and np.allclose(whole[0]["box"], [80, 70, 106, 90], atol=3)


def test_merge_keeps_one_box_per_object_and_every_separate_object():
    window = lambda x0, y0: (x0, y0, x0 + 100, y0 + 100)  # noqa: E731
    part = lambda w, boxes, whole=False: {  # noqa: E731
        "image_id": 5,
        "window": w,
        "whole": whole,
        "boxes": np.asarray(boxes, np.float32),
        "scores": np.linspace(0.9, 0.5, len(boxes)).astype(np.float32),
        "labels": np.zeros(len(boxes), np.int64),
    }
    parts = [
        part(window(0, 0), [[70, 10, 90, 30], [10, 10, 20, 20]]),  # the seam object whole; a second object
        part(window(80, 0), [[80, 10, 90, 30], [150, 50, 170, 70]]),  # the seam object cut at x=80; a third
        part((0, 0, 180, 100), [[71, 11, 89, 29]], whole=True),  # the whole-image pass, the seam object again
    ]
    [merged] = merge_tiles(parts, overlap_px=20)
    assert sorted(merged["boxes"].tolist()) == [[10, 10, 20, 20], [70, 10, 90, 30], [150, 50, 170, 70]]


def test_auto_tiling_engages_on_large_images_with_small_boxes_only(tmp_path):
    from pipeline.data import write_synthetic_dataset
    from pipeline.data.auto_fit import fit_to_data
    from pipeline.data.coco_index import load_split

    def fitted(preset: str, size: int):
        root = write_synthetic_dataset(tmp_path / preset, num_images=3, size=size, seed=1, preset=preset)
        config = load_config(None, [f"data.dir={root}"])
        config, choices = fit_to_data(config, load_split(root, "train")[2])
        return config, {c.key: c for c in choices}

    config, choices = fitted("aerial", 1536)  # 1,536 px images, boxes 7-64 px: 2-4 px fitted whole into 640 px
    tiling = choices["data.tiling"].value
    assert tiling["size"] <= 320 and 0.1 <= tiling["overlap"] <= 0.5, choices["data.tiling"].describe()
    assert config.model.image_size == 320 and "windows of" in choices["data.tiling"].reason
    config, choices = fitted("shapes", 256)  # the demo: images the size of the input
    assert config.data.tiling == "off" and "under 2x" in choices["data.tiling"].reason
    pinned = load_config(None, ["data.tiling={size: 256, overlap: 0.1}"])
    assert pinned.data.tiling_spec(320) == TilingSpec(256, 0.1)
    assert load_config(None, ["data.tiling={scale: 2}"]).data.tiling_spec(320) == TilingSpec(160, 0.2)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sometimes", "must be auto, off or a mapping"),
        ("{size: 16}", "size=16"),
        ("{size: 256, scale: 2}", "not both"),
        ("{overlap: 0.9}", "overlap=0.9"),
        ("{stride: 3}", "unknown key"),
    ],
)
def test_bad_tiling_values_are_refused_by_name(value, message):
    with pytest.raises(ConfigError, match="data.tiling") as error:
        load_config(None, [f"data.tiling={value}"])
    assert message in str(error.value)


def test_the_slice_flag_follows_the_models_windows_unless_set():
    trained = tiling_from_tag('{"size": 512, "overlap": 0.25}')
    assert slice_setting("auto", trained) == TilingSpec(512, 0.25)
    assert tiling_from_tag("off") is None and slice_setting("auto", None) is None
    assert slice_setting("off", trained) is None
    assert slice_setting("640", None) == TilingSpec(640)
    with pytest.raises(ValueError, match="--slice 'big'"):
        slice_setting("big", None)
