"""Config loading: defaults, YAML files, `--set` overrides with coercion, and rejection of bad keys and values."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import main as cli_main
from pipeline.config import ConfigError, PipelineConfig, flatten, load_config, save_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["default.yaml", "smoke.yaml"])
def test_shipped_configs_load(name):
    config = load_config(CONFIGS / name)
    assert config.ray.num_workers == 2
    size = config.model.image_size
    assert size == "auto" or size % 128 == 0  # the main job fits it to the demo boxes


def test_overrides_are_coerced_to_field_types():
    config = load_config(
        None,
        [
            "train.epochs=3",
            "optim.lr=1e-3",
            "optim.clip_grad_norm=null",
            "ray.name=2024",
            "train.compile=true",
            "ray.cpus_per_worker=1",
        ],
    )
    assert config.train.epochs == 3
    assert config.optim.lr == pytest.approx(1e-3) and isinstance(config.optim.lr, float)
    assert config.optim.clip_grad_norm is None
    assert config.ray.name == "2024"  # a name, not a number
    assert config.train.compile is True
    assert isinstance(config.ray.cpus_per_worker, float)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochz=3", "unknown key(s) ['train.epochz']"),
        ("trian.epochs=3", "unknown section(s) ['trian']"),
        ("train.epochs=abc", "train.epochs='abc': expected an integer"),
        ("train.epochs=0", "train.epochs=0: must be >= 1"),
        ("train.amp=fp8", "train.amp='fp8': not supported; choose one of ['auto', 'none', 'bf16', 'fp16']"),
        ("train.compile_mode=fast", "train.compile_mode='fast': not supported"),
        ("data.loader_workers=many", "data.loader_workers='many': must be auto or a number >= 0"),
        ("data.loader_workers=-1", "data.loader_workers=-1: must be auto or a number >= 0"),
        ("model.variant=d9", "model.variant='d9'"),
        ("model.image_size=-256", "model.image_size=-256: must be > 0"),
        ("optim.lr=-1", "optim.lr=-1.0: must be > 0"),
        ("train.sync_bn=maybe", "train.sync_bn='maybe': expected true or false"),
        ("epochs=3", "must be section.key"),
        ("train.epochs", "must look like section.key=value"),
    ],
)
def test_bad_overrides_are_rejected_naming_key_and_value(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert expected in str(info.value)


def test_unknown_key_error_lists_valid_keys():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["optim.learning_rate=0.1"])
    for valid in ("lr", "momentum", "weight_decay", "warmup_epochs"):
        assert f"'{valid}'" in str(info.value)


def test_yaml_file_errors_name_the_file(tmp_path):
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("train:\n  epochs: 2\n  bogus: 1\n")
    with pytest.raises(ConfigError, match=r"train\.bogus.*bad\.yaml"):
        load_config(bad_key)
    not_yaml = tmp_path / "broken.yaml"
    not_yaml.write_text("train: [epochs: 2\n")
    with pytest.raises(ConfigError, match="broken.yaml is not valid YAML"):
        load_config(not_yaml)
    with pytest.raises(ConfigError, match="cannot read config file .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_resolved_config_round_trips_through_yaml(tmp_path):
    config = load_config(CONFIGS / "smoke.yaml", ["train.epochs=5", "optim.name=adamw"])
    path = save_config(config, tmp_path / "resolved.yaml")
    again = load_config(path)
    assert again == config
    assert isinstance(again, PipelineConfig)
    flat = flatten(config)
    assert flat["train.epochs"] == 5 and flat["optim.name"] == "adamw" and "mlflow.experiment" in flat


def test_model_size_rule_of_effdet_core_is_reported_as_config_error():
    from pipeline.training.inputs import model_normalisation

    with pytest.raises(ConfigError, match=r"model: image_size \(300, 300\) must be positive and divisible by"):
        model_normalisation(load_config(None, ["model.variant=d0", "model.image_size=300"]))
    size, mean, _ = model_normalisation(load_config(None, ["model.image_size=null"]))
    assert size == (320, 320) and mean == (0.5, 0.5, 0.5)  # lite0's official size and normalisation


def test_cli_rejects_bad_config_before_any_work(capsys):
    code = cli_main(["train", "--set", "train.epochs=-2"])
    assert code == 1
    assert "train.epochs=-2: must be >= 1" in capsys.readouterr().err


def test_gpu_settings_a_cpu_run_cannot_honour_are_reported_not_silently_dropped():
    from pipeline.config import load_config
    from pipeline.training.device import ignored_on_cpu

    cpu = load_config(None, ["train.amp=bf16", "train.compile=true"])
    notes = ignored_on_cpu(cpu)
    assert len(notes) == 2 and "train.amp=bf16" in notes[0] and "train.compile" in notes[1]
    assert ignored_on_cpu(load_config(None, [])) == []  # the defaults (amp auto, SyncBN) say nothing on CPU
    gpu = load_config(None, ["train.amp=bf16", "train.compile=true", "ray.use_gpu=true"])
    assert ignored_on_cpu(gpu) == []


def test_precedence_is_yaml_then_set_then_command_flags(tmp_path):
    """The same key from three places: the config file loses to `--set`, which loses to the command's own flag."""
    import argparse

    from pipeline.cli.common import train_config

    config_file = tmp_path / "job.yaml"
    config_file.write_text("ray:\n  num_workers: 3\n  use_gpu: false\ntrain:\n  epochs: 7\n", encoding="utf-8")

    def resolved(overrides: list[str], num_workers: int | None):
        args = argparse.Namespace(config=str(config_file), overrides=overrides, num_workers=num_workers, use_gpu=False)
        return train_config(args)

    assert (resolved([], None).ray.num_workers, resolved([], None).train.epochs) == (3, 7)  # the YAML
    with_set = resolved(["ray.num_workers=5", "train.epochs=2"], None)
    assert (with_set.ray.num_workers, with_set.train.epochs) == (5, 2)  # --set beats the YAML
    assert resolved(["ray.num_workers=5"], 1).ray.num_workers == 1  # --num-workers beats --set
    assert resolved(["ray.num_workers=5", "ray.num_workers=4"], None).ray.num_workers == 4  # the last --set wins


def test_every_change_goes_through_one_validated_override():
    from pipeline.config import override, replace

    base = load_config(None, ["train.epochs=3"])
    changed = override(base, {"train.epochs": 5, "model.fpn_channels": 48})
    assert (changed.train.epochs, changed.model.fpn_channels, base.train.epochs) == (5, 48, 3)
    assert replace(base, train={"epochs": 5}, model={"fpn_channels": 48}) == changed
    with pytest.raises(ConfigError, match=r"train.epochs=0: must be >= 1"):
        override(base, {"train.epochs": 0})
    with pytest.raises(ConfigError, match=r"override key 'epochs' must be section.key"):
        override(base, {"epochs": 5})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['train.epoch'\]"):
        override(base, {"train.epoch": 5})
