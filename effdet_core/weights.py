"""Loading checkpoints published by the `effdet` package (tf_efficientdet_* / tf_efficientdet_lite*) into our model.

Both models hold the same tensors under different names; a table of regular expressions renames them and
the load is strict: every tensor of ours must be filled, every tensor of theirs used, every shape equal.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .backbone import read_state_dict
from .model import EfficientDet

# (effdet key pattern, our key template); {min} is replaced by a level number at load time.
_RENAMES: list[tuple[str, str]] = [
    (r"^backbone\.(.*)$", r"backbone.\1"),
    (r"^fpn\.resample\.(\d+)\.conv\.conv\.(.*)$", r"neck.extra_levels.P{level}.proj.conv.\2"),
    (r"^fpn\.resample\.(\d+)\.conv\.bn\.(.*)$", r"neck.extra_levels.P{level}.proj.bn.\2"),
    (
        r"^fpn\.cell\.(\d+)\.fnode\.(\d+)\.combine\.resample\.(\d+)\.conv\.conv\.(.*)$",
        r"neck.cells.\1.nodes.\2.inputs.\3.proj.conv.\4",
    ),
    (
        r"^fpn\.cell\.(\d+)\.fnode\.(\d+)\.combine\.resample\.(\d+)\.conv\.bn\.(.*)$",
        r"neck.cells.\1.nodes.\2.inputs.\3.proj.bn.\4",
    ),
    (r"^fpn\.cell\.(\d+)\.fnode\.(\d+)\.combine\.edge_weights$", r"neck.cells.\1.nodes.\2.fusion.weights"),
    (
        r"^fpn\.cell\.(\d+)\.fnode\.(\d+)\.after_combine\.conv\.conv_(dw|pw)\.(.*)$",
        r"neck.cells.\1.nodes.\2.conv.\3.\4",
    ),
    (r"^fpn\.cell\.(\d+)\.fnode\.(\d+)\.after_combine\.conv\.bn\.(.*)$", r"neck.cells.\1.nodes.\2.conv.bn.\3"),
    (r"^(class|box)_net\.conv_rep\.(\d+)\.conv_(dw|pw)\.(.*)$", r"\1_head.convs.\2.\3.\4"),
    (r"^(class|box)_net\.bn_rep\.(\d+)\.(\d+)\.bn\.(.*)$", r"\1_head.norms.\2.\3.\4"),
    (r"^(class|box)_net\.predict\.conv_(dw|pw)\.(.*)$", r"\1_head.predict.\2.\3"),
]
_IGNORED = re.compile(r"^anchors\.")  # effdet bench wrappers store their anchors as a buffer


def rename_effdet_key(key: str, min_level: int) -> str | None:
    """effdet state-dict key -> our key (None for keys we do not keep)."""
    if _IGNORED.match(key):
        return None
    for pattern, template in _RENAMES:
        match = re.match(pattern, key)
        if match:
            if "{level}" in template:
                template = template.replace("{level}", str(min_level + int(match.group(1))))
            return match.expand(template)
    raise ValueError(f"effdet checkpoint key {key!r} has no counterpart in this model")


def load_effdet_weights(
    model: EfficientDet,
    state_dict_or_path: dict[str, torch.Tensor] | str | os.PathLike,
) -> EfficientDet:
    """Loads an `effdet` EfficientDet state dict (or a .pth/.safetensors file holding one) into `model`, in place."""
    state = _read(state_dict_or_path)
    if all(k.startswith("model.") for k in state):  # saved from a DetBenchTrain/Predict wrapper
        state = {k.removeprefix("model."): v for k, v in state.items()}
    renamed = {}
    for key, value in state.items():
        ours = rename_effdet_key(key, model.config.min_level)
        if ours is not None:
            renamed[ours] = value
    own = model.state_dict()
    missing = sorted(set(own) - set(renamed))
    unexpected = sorted(set(renamed) - set(own))
    bad_shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in renamed.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or bad_shapes:
        raise ValueError(
            f"effdet weights do not fit {model.config.name!r} with {model.num_classes} classes: "
            f"missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)}), "
            f"wrong shapes {bad_shapes[:5]} ({len(bad_shapes)})"
        )
    model.load_state_dict(renamed, strict=True)
    return model


def _read(source: dict[str, torch.Tensor] | str | os.PathLike) -> dict[str, torch.Tensor]:
    if isinstance(source, dict):
        return source
    if not Path(source).is_file():
        raise ValueError(f"effdet checkpoint {str(source)!r} does not exist")
    return read_state_dict(source)
