"""The job's configuration: one frozen dataclass per section (data, model, optim, train, eval, ray, mlflow), loaded
from YAML plus `--set section.key=value` overrides.

Loading rejects unknown keys (naming the valid ones) and bad values (naming the key and the value) before any
long work starts; the resolved config prints and saves as YAML and flattens to MLflow params.

Owns: `checks` (ConfigError and the shared value checks), the sections (`data`, `model`, `training`, `runtime`),
`augment` (augmentation presets and steps, pure Python), `schema` (PipelineConfig, from_dict/to_dict),
`overrides`, `loading`. May import: `effdet_core.config` (the variants, light) and the standard library; every
layer of the pipeline imports it.
"""

from pipeline.config.checks import ConfigError
from pipeline.config.data import DataConfig
from pipeline.config.loading import load_config, read_yaml_mapping, save_config, to_yaml
from pipeline.config.model import AUTO, MODEL_VARIANTS, ModelConfig
from pipeline.config.overrides import override, parse_override, replace
from pipeline.config.runtime import MlflowConfig, RayConfig
from pipeline.config.schema import PipelineConfig, flatten, from_dict, to_dict
from pipeline.config.training import EvalConfig, OptimConfig, TrainConfig

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
