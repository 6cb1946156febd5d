"""The registered model's artifact layout and its safe loader: weights (safetensors), model config (JSON) and
label map (JSON), rebuilt into an `effdet_core` network with no pickled code anywhere.

Layout of one model package (the three files are the pyfunc model's `artifacts`)::

    model.safetensors   state_dict of effdet_core.EfficientDet
    model_config.json   {"format_version", "model": asdict(EfficientDetConfig), "num_classes", "postprocess",
                         "tiling": the training windows {"size", "overlap"} or null (optional: older packages)}
    label_map.json      pipeline.data.LabelMap.to_dict()
    model.onnx          optional: the ONNX Runtime serving graph (`pipeline.registry.onnx_backend`)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from effdet_core import EfficientDet, EfficientDetConfig, PostprocessConfig, create_model
from pipeline.config.tiling import TilingSpec, check_tiling
from pipeline.data import LabelMap
from pipeline.registry.errors import ArtifactError
from pipeline.registry.onnx_backend import ONNX_FILE

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model_config.json"
LABEL_MAP_FILE = "label_map.json"
# pyfunc artifact key -> file name; the keys are what `PythonModelContext.artifacts` holds at load time
ARTIFACT_FILES: dict[str, str] = {"weights": WEIGHTS_FILE, "model_config": CONFIG_FILE, "label_map": LABEL_MAP_FILE}
ONNX_ARTIFACT = "onnx"  # the optional fourth artifact key (file: onnx_backend.ONNX_FILE)
FORMAT_VERSION = 1
CONFIG_KEYS = ("format_version", "model", "num_classes", "postprocess")  # required
OPTIONAL_KEYS = ("tiling",)
# JSON has no tuples: these EfficientDetConfig fields are tuples (of tuples) and are converted back on load
_TUPLE_FIELDS = ("image_size", "aspect_ratios", "mean", "std", "backbone_out_indices")


@dataclass(frozen=True)
class ModelPackage:
    """A loaded, validated model package: the network in eval mode plus what is needed to use it."""

    model: EfficientDet
    label_map: LabelMap
    postprocess: PostprocessConfig
    onnx_path: Path | None = None  # the serving graph, when the version carries one
    tiling: TilingSpec | None = None  # the windows it was trained on: large images are predicted sliced

    @property
    def config(self) -> EfficientDetConfig:
        return self.model.config


def config_dict(
    model: EfficientDet, postprocess: PostprocessConfig | None = None, tiling: TilingSpec | None = None
) -> dict[str, Any]:
    """The JSON-ready model config of `model` (the resolved EfficientDetConfig, not a variant name)."""
    return {
        "format_version": FORMAT_VERSION,
        "model": dataclasses.asdict(model.config),
        "num_classes": int(model.num_classes),
        "postprocess": dataclasses.asdict(postprocess or PostprocessConfig()),
        "tiling": tiling.to_dict() if tiling is not None else None,
    }


def write_package(
    model: EfficientDet,
    label_map: LabelMap,
    out_dir: str | os.PathLike,
    postprocess: PostprocessConfig | None = None,
    onnx_graph: str | os.PathLike | None = None,
    tiling: TilingSpec | None = None,
) -> dict[str, str]:
    """Write the three artifact files into `out_dir`, plus the serving graph `onnx_graph` when given (copied);
    returns {artifact key: path} for the pyfunc `artifacts`. `tiling`: the training windows (model_config.json)."""
    from safetensors.torch import save_file

    if label_map.num_classes != model.num_classes:
        raise ValueError(f"label map has {label_map.num_classes} classes but the model {model.num_classes}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # contiguous CPU clones: safetensors refuses shared or strided storage
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt", "num_classes": str(model.num_classes)})
    (out / CONFIG_FILE).write_text(json.dumps(config_dict(model, postprocess, tiling), indent=2), encoding="utf-8")
    (out / LABEL_MAP_FILE).write_text(json.dumps(label_map.to_dict(), indent=2), encoding="utf-8")
    artifacts = {key: str(out / name) for key, name in ARTIFACT_FILES.items()}
    if onnx_graph is not None:
        if Path(onnx_graph).resolve() != (out / ONNX_FILE).resolve():
            shutil.copyfile(onnx_graph, out / ONNX_FILE)
        artifacts[ONNX_ARTIFACT] = str(out / ONNX_FILE)
    return artifacts


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ArtifactError(f"model artifact {path} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ArtifactError(f"model artifact {path} is not valid JSON: {e}") from None


def _check_keys(path: Path, section: str, data: Any, valid: list[str], required: list[str]) -> None:
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: {section} must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ArtifactError(f"{path}: unknown {section} key(s) {unknown}; valid keys: {sorted(valid)}")
    missing = sorted(set(required) - set(data))
    if missing:
        raise ArtifactError(f"{path}: {section} is missing key(s) {missing}")


def read_model_config(
    path: str | os.PathLike,
) -> tuple[EfficientDetConfig, int, PostprocessConfig, TilingSpec | None]:
    """Parse and validate `model_config.json`; every key is checked before anything is built."""
    path = Path(path)
    data = _read_json(path)
    _check_keys(path, "model config", data, [*CONFIG_KEYS, *OPTIONAL_KEYS], list(CONFIG_KEYS))
    if data["format_version"] != FORMAT_VERSION:
        raise ArtifactError(f"{path}: format_version {data['format_version']!r} unsupported (reads {FORMAT_VERSION})")
    fields = dataclasses.fields(EfficientDetConfig)
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    _check_keys(path, "'model'", data["model"], [f.name for f in fields], required)
    post_fields = [f.name for f in dataclasses.fields(PostprocessConfig)]
    _check_keys(path, "'postprocess'", data["postprocess"], post_fields, [])
    num_classes = data["num_classes"]
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ArtifactError(f"{path}: num_classes must be a positive integer, got {num_classes!r}")
    model_cfg = {k: _to_tuple(v) if k in _TUPLE_FIELDS else v for k, v in data["model"].items()}
    try:
        config, postprocess = EfficientDetConfig(**model_cfg), PostprocessConfig(**data["postprocess"])
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"{path}: invalid model config: {e}") from None
    return config, num_classes, postprocess, _read_tiling(path, data.get("tiling"))


def _read_tiling(path: Path, value: Any) -> TilingSpec | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"size", "overlap"}:
        raise ArtifactError(f'{path}: \'tiling\' must be null or {{"size": PX, "overlap": F}}, got {value!r}')
    try:
        check_tiling(value)
    except ValueError as e:
        raise ArtifactError(f"{path}: 'tiling': {e}") from None
    return TilingSpec(int(value["size"]), float(value["overlap"]))


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value


def read_label_map(path: str | os.PathLike, num_classes: int) -> LabelMap:
    path = Path(path)
    data = _read_json(path)
    try:
        label_map = LabelMap.from_dict(data)
    except (TypeError, ValueError, KeyError) as e:
        raise ArtifactError(f"{path}: invalid label map: {e}") from None
    if label_map.num_classes != num_classes:
        raise ArtifactError(f"{path}: {label_map.num_classes} labels but the model config says {num_classes} classes")
    return label_map


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load safetensors weights into `model`, refusing missing/unexpected keys and wrong shapes or dtypes."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model artifact {path} is missing")
    try:
        weights = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{path}: not a readable safetensors file: {e}") from None
    expected = model.state_dict()
    problems = [f"missing tensor {k!r}" for k in expected if k not in weights]
    problems += [f"unexpected tensor {k!r}" for k in weights if k not in expected]
    for key in expected.keys() & weights.keys():
        want, got = expected[key], weights[key]
        if want.shape != got.shape or want.dtype != got.dtype:
            problems.append(
                f"tensor {key!r} is {tuple(got.shape)} {got.dtype}, the config needs {tuple(want.shape)} {want.dtype}"
            )
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ArtifactError(f"{path}: weights do not match the model config: {'; '.join(problems[:5])}{more}")
    model.load_state_dict(weights, strict=True)


def load_package(
    weights: str | os.PathLike,
    model_config: str | os.PathLike,
    label_map: str | os.PathLike,
    onnx: str | os.PathLike | None = None,
) -> ModelPackage:
    """Rebuild the network from `effdet_core` and load the weights; config and label map are validated first.
    `onnx`: the version's serving graph, if it has one (loaded later, by the onnxruntime backend)."""
    config, num_classes, postprocess, tiling = read_model_config(model_config)
    labels = read_label_map(label_map, num_classes)
    if not Path(weights).is_file():  # before the (slow) model build
        raise ArtifactError(f"model artifact {weights} is missing")
    model = create_model(config, num_classes, pretrained_backbone=None)
    load_weights(model, weights)
    if onnx is not None and not Path(onnx).is_file():
        raise ArtifactError(f"model artifact {onnx} is missing")
    onnx_path = Path(onnx) if onnx is not None else None
    return ModelPackage(model.eval(), labels, postprocess, onnx_path, tiling)


def load_package_dir(directory: str | os.PathLike) -> ModelPackage:
    """`load_package` of a directory holding the three files, and the serving graph when there is one (e.g. a
    downloaded `artifacts/` folder)."""
    d = Path(directory)
    onnx = d / ONNX_FILE if (d / ONNX_FILE).is_file() else None
    return load_package(d / WEIGHTS_FILE, d / CONFIG_FILE, d / LABEL_MAP_FILE, onnx)
