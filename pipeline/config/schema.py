"""The whole job's configuration (`PipelineConfig`, one section per concern) and its plain-dict form: `from_dict`
checks every key and value against the sections' annotations, `to_dict` is what YAML, JSON, MLflow and Ray
workers receive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from pipeline.config.checks import ConfigError
from pipeline.config.data import DataConfig
from pipeline.config.model import ModelConfig
from pipeline.config.runtime import MlflowConfig, RayConfig
from pipeline.config.training import EvalConfig, OptimConfig, TrainConfig


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


def to_dict(config: PipelineConfig) -> dict[str, dict[str, Any]]:
    """Nested plain dicts (lists, not tuples: what YAML, JSON and MLflow take)."""

    def plain(value: Any) -> Any:
        return [plain(v) for v in value] if isinstance(value, tuple | list) else value

    return {name: {k: plain(v) for k, v in section.items()} for name, section in dataclasses.asdict(config).items()}


def flatten(config: PipelineConfig) -> dict[str, Any]:
    """`{"data.dir": ..., "train.epochs": ...}` for MLflow params."""
    return {f"{section}.{key}": value for section, values in to_dict(config).items() for key, value in values.items()}
