"""Fixtures for the registry tests: tiny random-weight detectors, a small synthetic dataset, and one SQLite
MLflow store (per test session) holding three registered versions of one model; the champion (version 3)
carries an ONNX Runtime serving graph, versions 1 and 2 do not.

Registering costs seconds (model logging validates the input example by loading and running the model),
so the versions are registered once and the tests read them; tests that change aliases restore them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import effdet_core as E
from pipeline.config.model import AUTO_KEYS
from pipeline.data import LabelMap, write_synthetic_dataset

ROOT = Path(__file__).resolve().parents[2]
TINY = {"image_size": 128, "fpn_channels": 32, "fpn_repeats": 1, "head_repeats": 1}
# the synthetic dataset's categories (ids 1-3), so a registered model can be evaluated on it
LABEL_MAP = LabelMap((1, 2, 3), ("circle", "square", "triangle"))
MODEL_NAME = "shapes"
# val AP of the three registered versions: v2 is worse than v1 (champion stays), v3 is better (champion moves)
VERSION_APS = {"1": 0.20, "2": 0.10, "3": 0.30}


def tiny_model(seed: int = 0) -> E.EfficientDet:
    """A 3-class Lite0 at 128 px with a narrow, shallow BiFPN; random weights (a fixed seed)."""
    torch.manual_seed(seed)
    model = E.create_model("lite0", num_classes=3, **TINY).eval()
    with torch.no_grad():  # make detections depend on the seed (the prior-initialised head is nearly constant)
        model.class_head.predict.pw.bias.add_(torch.randn_like(model.class_head.predict.pw.bias))
    return model


def tiny_state(seed: int, ap: float):
    """A training checkpoint (TrainState) of `tiny_model(seed)` as the training loop writes it."""
    from pipeline.training.checkpoint import BestEval, TrainState

    model = tiny_model(seed)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    fitted = {key: None for key in AUTO_KEYS}  # training saves fitted values, never `auto`
    model_cfg = {"variant": "lite0", "pretrained_backbone": None, **fitted, **TINY}
    metrics = {"epoch": 2, "val_AP": ap, "val_AP50": min(1.0, 2 * ap)}
    return TrainState(
        epoch=2,
        model=weights,
        config={"model": model_cfg},
        label_map=LABEL_MAP.to_dict(),
        metrics=metrics,
        best=BestEval(step=20, epoch=2, value=ap, metrics=metrics, weights=weights),
    )


@dataclass
class RegistryFixture:
    root: Path
    uri: str
    dataset: Path
    fingerprint: str
    registrations: list  # pipeline.registry.Registration of versions 1, 2, 3
    training_run: str  # the run version 2 was logged into
    name: str = MODEL_NAME
    aps: dict[str, float] = field(default_factory=lambda: dict(VERSION_APS))  # version -> registered val_AP


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "shapes", num_images=8, size=128, seed=1)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> RegistryFixture:
    from pipeline.registry import dataset_fingerprint, register_from_checkpoint, register_model
    from pipeline.registry.registry import client, ensure_experiment
    from pipeline.training.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    fingerprint = dataset_fingerprint(dataset, "val")
    # version 1 the way training registers it: from a checkpoint directory (with latency measured)
    checkpoint_dir = root / "checkpoint"
    save_checkpoint(tiny_state(seed=1, ap=VERSION_APS["1"]), checkpoint_dir)
    registrations = [register_from_checkpoint(checkpoint_dir, MODEL_NAME, uri, None, fingerprint, onnx=False)]
    # version 2 logged into an existing (training) run, as `train --register` does
    training_run = client(uri).create_run(ensure_experiment(uri, "training"), run_name="train").info.run_id
    for version, run_id in (("2", training_run), ("3", None)):
        ap = VERSION_APS[version]
        metrics = {"val_AP": ap, "val_AP50": 2 * ap}
        registrations.append(
            register_model(
                tiny_model(int(version)),
                LABEL_MAP,
                MODEL_NAME,
                uri,
                metrics,
                fingerprint,
                run_id=run_id,
                measure_latency=False,
                onnx=version == "3",  # the champion carries the ONNX Runtime graph (exported in ~10 s), v2 not
                parity_data=dataset,
            )
        )
    return RegistryFixture(root, uri, dataset, fingerprint, registrations, training_run)


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`python run_pipeline.py ARGS` in a fresh process, without MLFLOW_TRACKING_URI in its environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")}
    return subprocess.run(
        [sys.executable, "run_pipeline.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def make_model():
    """`tiny_model(seed)` (fixtures rather than imports: tests/ is not a package)."""
    return tiny_model


@pytest.fixture
def label_map() -> LabelMap:
    return LABEL_MAP


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def make_state():
    """`tiny_state(seed, ap)`: a training checkpoint as the loop writes it."""
    return tiny_state
