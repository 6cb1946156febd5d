"""What a registered version records about itself: scaling, size, cost, accuracy, data and code provenance.

Everything here becomes a string model-version tag, so `registry list/show` and the MLflow UI can compare
versions without downloading them.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from effdet_core import EfficientDet, model_cost
from pipeline.data.fingerprint import dataset_fingerprint as dataset_fingerprint  # re-exported

REPO_ROOT = Path(__file__).resolve().parents[2]
# metric name in the version tags -> names accepted in the metrics dict (training reports val_*)
METRIC_ALIASES: dict[str, tuple[str, ...]] = {"val_AP": ("val_AP", "AP"), "val_AP50": ("val_AP50", "AP50")}


def code_version(repo: str | os.PathLike = REPO_ROOT) -> str:
    """The git commit of the code (with "-dirty" for uncommitted changes), or "unknown" outside a checkout."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def pick_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """{"val_AP", "val_AP50"} from a training or evaluation metrics dict; a missing one is an error."""
    out = {}
    for key, candidates in METRIC_ALIASES.items():
        found = next((name for name in candidates if name in metrics), None)
        if found is None:
            raise ValueError(f"metrics lack {key} (looked for {list(candidates)}); got keys {sorted(metrics)}")
        out[key] = float(metrics[found])
    return out


def model_tags(model: EfficientDet, latency: bool = True) -> dict[str, str]:
    """Variant, scaling coefficients, params, FLOPs (multiply-adds) and measured latency of `model`."""
    config = model.config
    tags = {
        "variant": config.name,
        "backbone": config.backbone,
        "image_size": "x".join(str(s) for s in config.image_size),
        "fpn_channels": str(config.fpn_channels),
        "fpn_repeats": str(config.fpn_repeats),
        "head_repeats": str(config.head_repeats),
        "num_classes": str(model.num_classes),
    }
    cost = model_cost(model, latency=latency)
    tags |= {"params": str(cost.params), "flops": str(cost.flops)}
    phi = re.fullmatch(r"d(\d)x?(-custom)?", config.name)
    if phi:  # the compound-scaling coefficient of D0-D7x and their custom scalings
        tags["phi"] = phi.group(1)
    if latency:
        tags |= {"latency_ms": f"{cost.latency_ms:.2f}", "latency_ms_min": f"{cost.latency_ms_min:.2f}"}
        tags["latency_device"] = cost.latency_device
    return tags
