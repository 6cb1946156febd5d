"""The training job's configuration: the sections (`pipeline.config_sections`), loaded from YAML plus `--set`
overrides.

Loading rejects unknown keys (naming the valid ones) and bad values (naming the key and the value) before any
long work starts; the resolved config prints and saves as YAML and flattens to MLflow params.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.config_sections import (
    AUTO,
    MODEL_VARIANTS,
    ConfigError,
    DataConfig,
    EvalConfig,
    MlflowConfig,
    ModelConfig,
    OptimConfig,
    RayConfig,
    TrainConfig,
)

__all__ = [
    "AUTO",
    "MODEL_VARIANTS",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "MlflowConfig",
    "ModelConfig",
    "OptimConfig",
    "PipelineConfig",
    "RayConfig",
    "TrainConfig",
    "flatten",
    "from_dict",
    "load_config",
    "override",
    "parse_override",
    "read_yaml_mapping",
    "replace",
    "save_config",
    "to_dict",
    "to_yaml",
]


@dataclass(frozen=True)
class PipelineConfig:
    """The whole training job."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)


# ---------------------------------------------------------------------------------------------- building


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check (and gently convert) one value against its field's type annotation."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if str in inner and isinstance(value, str):  # a word such as "auto" where a number is also allowed
            return value
        errors = []
        for option in (a for a in inner if a is not str or len(inner) == 1):
            try:
                return _coerce(key, value, option)
            except ConfigError as e:
                errors.append(str(e).split(": ", 1)[-1])
        raise ConfigError(f"{key}={value!r}: " + " or ".join(errors))
    if typing.get_origin(annotation) is tuple:  # tuple[X, ...]: a YAML list
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}={value!r}: expected a list")
        return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    if annotation is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{key}={value!r}: expected a mapping")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected true or false")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected an integer")
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise ConfigError(f"{key}={value!r}: expected a finite number")
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # `--set ray.name=2024` is a name, not a number
        raise ConfigError(f"{key}={value!r}: expected a string")
    raise TypeError(f"unsupported annotation {annotation!r} for {key}")  # a bug in this file, not user input


def _build_section(section_cls: type, section: str, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(section_cls)
    valid = [f.name for f in dataclasses.fields(section_cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(f"unknown key(s) {[f'{section}.{k}' for k in unknown]}; valid keys in {section!r}: {valid}")
    kwargs = {k: _coerce(f"{section}.{k}", v, hints[k]) for k, v in values.items()}
    return section_cls(**kwargs)


def from_dict(data: dict[str, Any] | None) -> PipelineConfig:
    """Build and validate a config from nested dicts; missing keys take their defaults."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping of sections, got {type(data).__name__}")
    sections = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; valid sections: {list(sections)}")
    hints = typing.get_type_hints(PipelineConfig)
    built = {}
    for name, values in data.items():
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"section {name!r} must be a mapping of keys, got {values!r}")
        built[name] = _build_section(hints[name], name, values)
    return PipelineConfig(**built)


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


def replace(config: PipelineConfig, **sections: dict[str, Any]) -> PipelineConfig:
    """A copy with some keys changed per section, e.g. `replace(cfg, train={"epochs": 3})` (validated)."""
    return override(
        config, {f"{name}.{key}": value for name, values in sections.items() for key, value in values.items()}
    )


def to_dict(config: PipelineConfig) -> dict[str, dict[str, Any]]:
    """Nested plain dicts (lists, not tuples: what YAML, JSON and MLflow take)."""

    def plain(value: Any) -> Any:
        return [plain(v) for v in value] if isinstance(value, tuple | list) else value

    return {name: {k: plain(v) for k, v in section.items()} for name, section in dataclasses.asdict(config).items()}


def to_yaml(config: PipelineConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def save_config(config: PipelineConfig, path: str | os.PathLike) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_yaml(config), encoding="utf-8")
    return out


def flatten(config: PipelineConfig) -> dict[str, Any]:
    """`{"data.dir": ..., "train.epochs": ...}` for MLflow params."""
    return {f"{section}.{key}": value for section, values in to_dict(config).items() for key, value in values.items()}
