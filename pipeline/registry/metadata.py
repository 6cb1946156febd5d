"""What a registered version records about itself: scaling, size, cost, accuracy, data and code provenance.

Everything here becomes a string model-version tag, so `registry list/show` and the MLflow UI can compare
versions without downloading them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from effdet_core import EfficientDet, model_cost
from pipeline.data import DatasetError, annotation_path, images_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
# metric name in the version tags -> names accepted in the metrics dict (training reports val_*)
METRIC_ALIASES: dict[str, tuple[str, ...]] = {"val_AP": ("val_AP", "AP"), "val_AP50": ("val_AP50", "AP50")}


def dataset_fingerprint(dataset_dir: str | os.PathLike, split: str = "val") -> str:
    """sha256 (first 16 hex digits) of the split's annotations (canonical JSON) and its image file names + sizes.

    Two evaluations are only comparable when their fingerprints match; editing a box, a category or an image
    file (size change) changes it, reformatting the JSON does not.
    """
    path = annotation_path(dataset_dir, split)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        file_names = sorted(str(image["file_name"]) for image in data["images"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{path}: cannot read annotations for the dataset fingerprint: {e}") from None
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode())
    root = images_dir(dataset_dir)
    for name in file_names:
        file = root / name
        if not file.is_file():
            raise DatasetError(f"{path}: image file {file} listed in the annotations does not exist")
        digest.update(f"\n{name}\t{file.stat().st_size}".encode())
    return digest.hexdigest()[:16]


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
