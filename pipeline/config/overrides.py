"""Changing a config: `section.key=value` strings (`--set`) and `{"section.key": value}` changes, each validated
by rebuilding the config from its plain-dict form."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from pipeline.config.checks import ConfigError
from pipeline.config.schema import PipelineConfig, from_dict, to_dict


def parse_override(item: str) -> tuple[str, Any]:
    """A `--set` string `section.key=value` -> ("section.key", YAML-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    path, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: cannot parse value: {e}") from e
    return path.strip(), value


def _set_dotted(data: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Nested section dicts with `{"section.key": value}` changes written in (a new dict; `data` is unchanged)."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for dotted, value in changes.items():
        parts = dotted.split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"override key {dotted!r} must be section.key, e.g. train.epochs")
        section, key = parts
        if not isinstance(data.setdefault(section, {}), dict):
            raise ConfigError(f"section {section!r} must be a mapping of keys")
        data[section][key] = value
    return data


def override(config: PipelineConfig, changes: Mapping[str, Any]) -> PipelineConfig:
    """`config` with `{"section.key": value}` changes, validated (a ConfigError names the key and the value).

    The one way a config changes after loading: `--set` strings (`load_config`), a search's sampled and managed
    values (`pipeline.tuning`) and code (`replace`) all come through here."""
    return from_dict(_set_dotted(to_dict(config), changes))


def replace(config: PipelineConfig, **sections: dict[str, Any]) -> PipelineConfig:
    """A copy with some keys changed per section, e.g. `replace(cfg, train={"epochs": 3})` (validated)."""
    return override(
        config, {f"{name}.{key}": value for name, values in sections.items() for key, value in values.items()}
    )
