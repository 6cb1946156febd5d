"""Training checkpoints: plain tensors, dicts and primitives written with `torch.save`, read back with
`torch.load(weights_only=True)` so a file that holds pickled code is refused instead of executed.

A checkpoint is a directory (what Ray Train's `Checkpoint.from_directory` wants) holding `checkpoint.pt`.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "epoch", "model", "config", "label_map")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be (or must not be) loaded; the message names the file."""


@dataclass
class BestEval:
    """The best evaluation so far (by `metric`): where it happened, its metrics and a CPU copy of its eval weights."""

    step: int  # optimizer step of the evaluation
    epoch: float  # the same in epochs
    value: float  # of `metric`
    metrics: dict[str, float]
    weights: dict[str, torch.Tensor]
    metric: str = "val_AP"


@dataclass(frozen=True)
class ChosenWeights:
    """The weights a checkpoint deploys, with the validation metrics and epoch that belong to them."""

    weights: dict[str, torch.Tensor]
    metrics: dict[str, float]
    epoch: float


WEIGHT_CHOICES = ("best", "last")


@dataclass
class TrainState:
    """Everything needed to continue a run where it stopped (`position`; `epoch` = epochs completed)."""

    epoch: int
    model: dict[str, torch.Tensor]
    config: dict[str, Any]
    label_map: dict[str, list]
    ema: dict[str, Any] | None = None
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # of the last completed epoch
    best: BestEval | None = None  # None until an evaluation has run
    position: dict[str, int] | None = None  # `stream.Position` (step, epoch, batch); None in epoch-only checkpoints
    schedule: dict[str, Any] | None = None  # `schedule.Schedule` as planned (a time budget's plan survives a resume)
    world: dict[str, Any] | None = None  # `elastic.WorldHistory` of a Ray run: worker counts, resizes

    def eval_weights(self) -> dict[str, torch.Tensor]:
        """The weights to evaluate/deploy: the EMA when there is one."""
        return self.ema["module"] if self.ema else self.model

    def chosen(self, which: str = "best") -> ChosenWeights:
        """The one "best or last" rule: the best evaluation's weights and metrics when asked for and there is
        one, else the last epoch's eval (EMA) weights and metrics."""
        if which not in WEIGHT_CHOICES:
            raise ValueError(f"weights={which!r} not supported; choose one of {list(WEIGHT_CHOICES)}")
        if which == "best" and self.best is not None:
            return ChosenWeights(self.best.weights, dict(self.best.metrics), self.best.epoch)
        return ChosenWeights(self.eval_weights(), dict(self.metrics), self.epoch)


def _plain(value: Any) -> Any:
    """Tensors moved to CPU (and detached) so the file loads anywhere; containers rebuilt as plain types."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def checkpoint_file(path: str | os.PathLike) -> Path:
    """Accept the checkpoint directory or the file inside it."""
    p = Path(path)
    return p / CHECKPOINT_FILE if p.is_dir() else p


def save_checkpoint(state: TrainState, directory: str | os.PathLike) -> Path:
    """Write `state` into `directory/checkpoint.pt` atomically (tmp file + rename); returns the file."""
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    best = vars(state.best) if state.best is not None else None  # stored as a plain dict: weights_only loads it
    payload = _plain({"format_version": FORMAT_VERSION, **vars(state), "best": best})
    target = out_dir / CHECKPOINT_FILE
    tmp = out_dir / f".{CHECKPOINT_FILE}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, target)
    return target


def load_checkpoint(path: str | os.PathLike) -> TrainState:
    """Load a checkpoint written by `save_checkpoint`, refusing anything but tensors/dicts/primitives."""
    file = checkpoint_file(path)
    if not file.is_file():
        raise CheckpointError(f"no checkpoint at {file}")
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {file}: it holds pickled objects or code, not only tensors, dicts and primitives "
            f"(loaded with weights_only=True for safety). Detail: {str(e).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"cannot read checkpoint {file}: {e}") from e
    if not isinstance(payload, dict):
        raise CheckpointError(f"{file} is not a training checkpoint (holds a {type(payload).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{file} is not a training checkpoint: missing keys {missing}")
    if payload["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{file}: checkpoint format {payload['format_version']} unsupported (this code reads {FORMAT_VERSION})"
        )
    payload.pop("format_version")
    known = set(TrainState.__dataclass_fields__)
    state = {k: v for k, v in payload.items() if k in known}
    try:
        state["best"] = BestEval(**state["best"]) if state.get("best") else None
    except TypeError as e:
        raise CheckpointError(f"{file}: unreadable best-evaluation record: {e}") from None
    return TrainState(**state)
