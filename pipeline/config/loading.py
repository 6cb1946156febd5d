"""Reading and writing configs: a YAML file plus `--set` overrides in, the resolved YAML out."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from pipeline.config.checks import ConfigError
from pipeline.config.overrides import _set_dotted, parse_override
from pipeline.config.schema import PipelineConfig, from_dict, to_dict


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Load a YAML config file (or the defaults) and apply `section.key=value` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml_mapping(path, "config file", "a mapping of sections")
    try:
        return from_dict(_set_dotted(data, dict(parse_override(item) for item in overrides)))
    except ConfigError as e:
        raise ConfigError(f"{e} (config {path or 'defaults'})" if path else str(e)) from None


def read_yaml_mapping(path: str | os.PathLike, what: str, expected: str) -> dict[str, Any]:
    """The mapping a YAML file holds; ConfigError naming `what` and the file when it is unreadable, not YAML or
    not a mapping (`expected` says what it should hold)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold {expected}, got {type(data).__name__}")
    return data


def to_yaml(config: PipelineConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def save_config(config: PipelineConfig, path: str | os.PathLike) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_yaml(config), encoding="utf-8")
    return out
