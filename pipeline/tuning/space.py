"""Search spaces as data: YAML files under `tune_spaces/`, composed and validated before any trial starts.

A space file holds any of:

    description: free text
    space:                       # config keys (section.key) -> one distribution each
      model.fpn_channels: {choice: [32, 64, 88]}
      model.fpn_repeats: {randint: [1, 4]}       # inclusive bounds
      optim.lr: {loguniform: [0.01, 0.5]}
      optim.warmup_epochs: {uniform: [0.5, 2.0]}
      model.fusion: {grid: [fast, softmax, sum]}  # every value, num_samples times
    compound:                    # EfficientDet's compound coefficient, coupled to backbone, width, depth,
      phi: {choice: [0, 1, 2]}   #   head depth and resolution by the official table
      family: efficientdet       # efficientdet (D0-D7) | lite (Lite0-Lite4)
      max_image_size: 256        # optional cap on the resolution, for small machines
    fixed:                       # constants for every trial
      model.variant: lite0

Several files compose (`--space a.yaml --space b.yaml`); a key searched or fixed by two files is an error.
Every value a trial could get is checked against the config schema and the model it builds.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, PipelineConfig, override, read_yaml_mapping, to_dict

FILE_KEYS = ("description", "space", "compound", "fixed")
DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint")


def managed_values(*, max_epochs: int, trial_id: str, train_storage: str, search: str) -> dict[str, Any]:
    """What the search itself sets on every trial, on top of the space's values (`SearchContext.trial_config`)."""
    return {
        "train.epochs": max_epochs,
        "train.steps": None,
        "train.eval_every": "1 epoch",  # ASHA decides on every epoch's val mAP
        "ray.name": trial_id,
        "ray.storage_path": train_storage,
        "mlflow.run_name": f"{search}/{trial_id}",
    }


# what a space may not vary: the search's own values per trial, and what all trials share from the base config
MANAGED_KEYS = (
    *managed_values(max_epochs=1, trial_id="", train_storage="", search=""),
    "train.output_dir",
    "data.dir",
    "data.generate_if_missing",
)
MANAGED_SECTIONS = ("ray", "mlflow")
COMPOUND_KEYS = ("model.variant", "model.image_size", "model.fpn_channels", "model.fpn_repeats", "model.head_repeats")
COMPOUND_COUPLED = (*COMPOUND_KEYS, "model.backbone")
FAMILIES = {"efficientdet": ("d", 7), "lite": ("lite", 4)}  # family -> (variant prefix, largest phi)
MAX_JOINT_CHECKS = 4096  # beyond this many value combinations, each dimension is checked on its own
OFFICIAL_SIZES = {"d": lambda phi: 512 + 128 * phi, "lite": lambda phi: (320, 384, 448, 512, 640)[phi]}


@dataclass(frozen=True)
class Dimension:
    """One searched key: a distribution over its values, from `source` (a space file)."""

    key: str  # "section.key", or "phi" for the compound coefficient
    kind: str  # one of DISTRIBUTIONS
    args: tuple  # the values (choice, grid) or the bounds (uniform, loguniform, randint)
    source: str

    def candidates(self) -> list[Any]:
        """Values to validate: all of a discrete set, the bounds of a range (all of a short integer range)."""
        if self.kind in ("choice", "grid"):
            return list(self.args)
        low, high = self.args
        if self.kind == "randint" and high - low <= 16:
            return list(range(low, high + 1))
        return [low, high]

    def to_tune(self):
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.args))
        if self.kind == "grid":
            return tune.grid_search(list(self.args))
        if self.kind == "uniform":
            return tune.uniform(*self.args)
        if self.kind == "loguniform":
            return tune.loguniform(*self.args)
        return tune.randint(self.args[0], self.args[1] + 1)  # Ray's upper bound is exclusive; ours is not


@dataclass(frozen=True)
class Compound:
    """phi -> the official D{phi} (or Lite{phi}): backbone, BiFPN width/depth, head depth and resolution."""

    family: str = "efficientdet"
    max_image_size: int | None = None

    def overrides(self, phi: int) -> dict[str, Any]:
        prefix, _ = FAMILIES[self.family]
        size = OFFICIAL_SIZES[prefix](phi)
        if self.max_image_size is not None and size > self.max_image_size:
            size = self.max_image_size
        return {
            "model.variant": f"{prefix}{phi}",
            "model.image_size": size,
            "model.fpn_channels": None,
            "model.fpn_repeats": None,
            "model.head_repeats": None,
            "model.backbone": None,
        }


@dataclass(frozen=True)
class SearchSpace:
    """The composed space: searched dimensions, the optional compound coupling and the fixed values."""

    dimensions: dict[str, Dimension] = field(default_factory=dict)
    compound: Compound | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def param_space(self) -> dict[str, Any]:
        """Ray Tune's param_space: one entry per dimension, named by its config key (or "phi")."""
        return {key: dim.to_tune() for key, dim in self.dimensions.items()}

    def overrides(self, params: dict[str, Any]) -> dict[str, Any]:
        """A trial's sampled `params` -> flat `{"section.key": value}` config overrides (fixed values included)."""
        out = dict(self.fixed)
        for key, value in params.items():
            if key == "phi":
                out.update(self.compound.overrides(int(value)))
            elif key in self.dimensions:
                out[key] = value.item() if hasattr(value, "item") else value  # numpy scalars from samplers
        return out

    def has_grid(self) -> bool:
        return any(dim.kind == "grid" for dim in self.dimensions.values())


# ------------------------------------------------------------------------------------------------ loading


def _read(path: Path) -> dict[str, Any]:
    data = read_yaml_mapping(path, "search space", f"a mapping with keys {list(FILE_KEYS)}")
    if not data:
        raise ConfigError(f"search space {path} is empty: it must hold a mapping with keys {list(FILE_KEYS)}")
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        raise ConfigError(f"search space {path}: unknown top-level key(s) {unknown}; valid: {list(FILE_KEYS)}")
    return data


def _check_key(source: str, key: str) -> None:
    """`key` must be a real `section.key` of the config that a space may vary."""
    sections = to_dict(PipelineConfig())
    section, _, name = key.partition(".")
    if section not in sections or name not in sections[section]:
        raise ConfigError(
            f"search space {source}: unknown config key {key!r}; keys look like section.key, sections: {list(sections)}"
        )
    if section in MANAGED_SECTIONS or key in MANAGED_KEYS:
        raise ConfigError(
            f"search space {source}: {key!r} is set by the search itself (its flags, e.g. --max-epochs, "
            f"--workers-per-trial, or the base --config), not by a space"
        )


def _dimension(source: str, key: str, spec: Any) -> Dimension:
    where = f"search space {source}: {key}"
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: expected one distribution like {{choice: [...]}}; kinds: {list(DISTRIBUTIONS)}")
    kind, args = next(iter(spec.items()))
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where}: {kind} needs a non-empty list, got {args!r}")
    if kind in ("choice", "grid"):
        return Dimension(key, kind, tuple(args), source)
    if len(args) != 2 or not all(isinstance(a, int | float) and not isinstance(a, bool) for a in args):
        raise ConfigError(f"{where}: {kind} needs [low, high] numbers, got {args!r}")
    low, high = args
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"{where}: {kind} needs low < high, got {args!r}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs low > 0, got {args!r}")
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise ConfigError(f"{where}: randint needs integer bounds, got {args!r}")
    return Dimension(key, kind, (low, high), source)


def _compound(source: str, spec: Any) -> tuple[Compound, Dimension]:
    where = f"search space {source}: compound"
    if not isinstance(spec, dict) or "phi" not in spec:
        raise ConfigError(f"{where}: needs phi, e.g. compound: {{phi: {{choice: [0, 1, 2]}}}}")
    unknown = sorted(set(spec) - {"phi", "family", "max_image_size"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: ['phi', 'family', 'max_image_size']")
    family = spec.get("family", "efficientdet")
    if family not in FAMILIES:
        raise ConfigError(f"{where}.family={family!r}: choose one of {list(FAMILIES)}")
    cap = spec.get("max_image_size")
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 128 or cap % 128):
        raise ConfigError(f"{where}.max_image_size={cap!r}: must be a multiple of 128 (the coarsest level's stride)")
    phi = _dimension(source, "phi", spec["phi"])
    largest = FAMILIES[family][1]
    for value in phi.candidates():
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= largest:
            raise ConfigError(f"{where}.phi={value!r}: the {family} family has phi 0..{largest}")
    return Compound(family, cap), phi


def load_space(paths: list[str | Path], base: PipelineConfig) -> SearchSpace:
    """Read, compose and validate space files against `base` (the config the search varies)."""
    if not paths:
        raise ConfigError("a search needs at least one --space file (see tune_spaces/)")
    dimensions: dict[str, Dimension] = {}
    fixed: dict[str, Any] = {}
    owner: dict[str, str] = {}  # key -> the file that searches or fixes it
    compound = None

    def claim(key: str, source: str) -> None:
        if key in owner:
            raise ConfigError(f"{key!r} is set by both {owner[key]} and {source}; a key belongs to one space")
        owner[key] = source

    for path in map(Path, paths):
        source = str(path)
        data = _read(path)
        if data.get("compound") is not None:
            if compound is not None:
                raise ConfigError(f"search space {source}: a second compound block (only one phi per search)")
            compound, phi = _compound(source, data["compound"])
            dimensions["phi"] = phi
            for key in COMPOUND_COUPLED:
                claim(key, f"{source} (compound phi)")
        for key, spec in (data.get("space") or {}).items():
            _check_key(source, key)
            claim(key, source)
            dimensions[key] = _dimension(source, key, spec)
        for key, value in (data.get("fixed") or {}).items():
            _check_key(source, key)
            claim(key, source)
            fixed[key] = value
    space = SearchSpace(dimensions, compound, fixed, tuple(map(str, paths)))
    validate(space, base)
    return space


# --------------------------------------------------------------------------------------------- validating


def _check_trial(space: SearchSpace, base: PipelineConfig, params: dict[str, Any]) -> None:
    try:
        config = override(base, space.overrides(params))
        config.model.resolve()
    except ConfigError as e:
        sources = sorted({space.dimensions[k].source for k in params}) or list(space.sources)
        raise ConfigError(f"search space {', '.join(sources)}: a trial with {params} is impossible: {e}") from None


def validate(space: SearchSpace, base: PipelineConfig) -> None:
    """Every value a trial can get builds a valid config and model: jointly when the combinations are few, else
    each dimension alone (with the others at their base values)."""
    if not space.dimensions:
        _check_trial(space, base, {})
        return
    candidates = {key: dim.candidates() for key, dim in space.dimensions.items()}
    for key, values in candidates.items():  # each dimension alone first: the clearest message
        for value in values:
            _check_trial(space, base, {key: value})
    if math.prod(len(v) for v in candidates.values()) <= MAX_JOINT_CHECKS:
        keys = list(candidates)
        for combination in itertools.product(*candidates.values()):
            _check_trial(space, base, dict(zip(keys, combination, strict=True)))
