"""Search spaces: composition, the compound coupling, and bad spaces rejected before any trial starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config, override
from pipeline.tuning.space import load_space

REPO = Path(__file__).resolve().parents[2]
SPACES = REPO / "tune_spaces"


@pytest.fixture
def base():
    return load_config(REPO / "configs" / "default.yaml")


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["compound.yaml", "bifpn.yaml", "optim.yaml"])
def test_shipped_spaces_validate_against_the_default_config(base, name):
    space = load_space([SPACES / name], base)
    assert space.dimensions


def test_spaces_compose_and_every_key_keeps_its_source(base):
    space = load_space([SPACES / "bifpn.yaml", SPACES / "optim.yaml"], base)
    assert {d.source for d in space.dimensions.values()} == {str(SPACES / "bifpn.yaml"), str(SPACES / "optim.yaml")}
    assert {"model.fpn_channels", "model.feature_network", "optim.lr", "optim.ema_decay"} <= set(space.dimensions)


def test_compound_phi_sets_backbone_width_depth_and_capped_resolution(base):
    space = load_space([SPACES / "compound.yaml"], base)
    for phi, backbone, width, depth in ((0, "tf_efficientnet_lite0", 64, 3), (2, "tf_efficientnet_lite2", 112, 5)):
        config = override(base, space.overrides({"phi": phi}))
        resolved = config.model.resolve()
        assert (resolved.backbone, resolved.fpn_channels, resolved.fpn_repeats) == (backbone, width, depth)
        assert resolved.image_size == (256, 256)  # min(320/384/448, the file's cap of 256)
        assert config.model.pretrained_backbone == "imagenet"  # each trial's own backbone's ImageNet weights


def test_lite_family_without_cap_keeps_official_resolution(tmp_path, base):
    path = write(
        tmp_path, "compound: {phi: {choice: [1, 3]}, family: lite}\nfixed: {model.pretrained_backbone: null}\n"
    )
    space = load_space([path], base)
    config = override(base, space.overrides({"phi": 3}))
    assert config.model.variant == "lite3" and config.model.resolve().image_size == (512, 512)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("space: {model.fpn_widht: {choice: [32]}}", "unknown config key 'model.fpn_widht'"),
        ("space: {model.fpn_repeats: {choice: [0, 2]}}", "model.fpn_repeats=0"),
        ("space: {model.fpn_channels: {randint: [-8, 16]}}", "model.fpn_channels=-8"),
        (
            "fixed: {model.variant: d0, model.pretrained_backbone: null}\n"
            "space: {model.image_size: {choice: [256, 200]}}",
            "200",
        ),
        ("space: {model.feature_network: {choice: [bifpn, nasfpn]}}", "nasfpn"),
        ("space: {optim.lr: {loguniform: [0, 0.1]}}", "loguniform needs low > 0"),
        ("space: {optim.lr: {normal: [0, 1]}}", "expected one distribution"),
        ("space: {train.epochs: {choice: [3, 5]}}", "set by the search itself"),
        ("space: {ray.num_workers: {choice: [1, 2]}}", "set by the search itself"),
        ("spaces: {optim.lr: {choice: [0.1]}}", "unknown top-level key(s) ['spaces']"),
        ("compound: {phi: {choice: [0, 9]}}", "phi=9"),
        ("compound: {phi: {choice: [0]}, max_image_size: 300}", "max_image_size=300"),
        (
            "compound: {phi: {choice: [0, 1]}}\nfixed: {model.pretrained_backbone: lite0-imagenet}",
            "'lite0-imagenet' has no weights for the 'tf_efficientnet_b0' backbone",
        ),
    ],
)
def test_bad_space_is_rejected_with_file_and_value(tmp_path, base, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_space([path], base)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_a_key_searched_by_two_spaces_is_rejected(base):
    with pytest.raises(ConfigError, match="model.fpn_channels.*compound.yaml.*bifpn.yaml"):
        load_space([SPACES / "compound.yaml", SPACES / "bifpn.yaml"], base)


def test_combination_that_is_only_impossible_jointly_is_caught(tmp_path, base):
    # alone, each value fits the base (Lite0 at 256 px): Lite0 takes 320 px (its official uneven size) and D0
    # takes 256 px; together, D0 at 320 px has levels that 128 does not divide
    text = "fixed: {model.pretrained_backbone: null}\n"
    text += "space: {model.variant: {choice: [lite0, d0]}, model.image_size: {choice: [256, 320]}}"
    with pytest.raises(ConfigError, match=r"'model.variant': 'd0', 'model.image_size': 320"):
        load_space([write(tmp_path, text)], base)


def test_sampled_numpy_values_become_plain_config_values(tmp_path, base):
    import numpy as np

    space = load_space([write(tmp_path, "space: {model.fpn_repeats: {randint: [1, 3]}}")], base)
    config = override(base, space.overrides({"model.fpn_repeats": np.int64(2)}))
    assert config.model.fpn_repeats == 2 and type(config.model.fpn_repeats) is int
