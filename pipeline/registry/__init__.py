"""The MLflow model registry for trained detectors: package format, pyfunc model, aliases, lookup, ONNX export.

Names resolve lazily (PEP 562), so `registry list` imports MLflow but not torch; `from pipeline.registry
import register_from_checkpoint` works as usual. Training calls `register_from_checkpoint` for
`train --register NAME`.

Owns: `errors`, `onnx_backend` (ONNX Runtime sessions and predictor), `package` (the artifact format),
`predict` (`Detector`: either backend, then `effdet_core.postprocess`), `export` and `serving_graph` (the ONNX graph
a registration stores, kept only when it matches PyTorch), `pyfunc_model` / `pyfunc_entry` (the MLflow flavour),
`metadata`, `registry` (versions, aliases, the champion rule), `from_checkpoint`, `evaluate`. May import:
`pipeline.tracking`, `pipeline.training` (checkpoints, evaluation), `pipeline.evaluation`, `pipeline.data`,
`pipeline.config`, `effdet_core`, MLflow; never Ray (batch prediction over Ray Data is `pipeline.cluster`).
"""

from __future__ import annotations

from effdet_core.lazy import lazy_exports
from pipeline.registry.errors import (  # noqa: F401 (re-exported; light enough to import eagerly)
    ArtifactError,
    ExportError,
    ImageInputError,
    PromotionRefused,
    RegistryError,
)

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "register_from_checkpoint": "from_checkpoint",
    "model_from_state": "from_checkpoint",
    "dataset_fingerprint": "metadata",
    "code_version": "metadata",
    "ModelPackage": "package",
    "load_package": "package",
    "load_package_dir": "package",
    "write_package": "package",
    "Detector": "predict",
    "decode_image": "predict",
    "draw_detections": "predict",
    "to_coco_results": "predict",
    "export_onnx": "export",
    "ExportReport": "export",
    "CHAMPION": "registry",
    "CHALLENGER": "registry",
    "Decision": "registry",
    "Registration": "registry",
    "decide_promotion": "registry",
    "get_version": "registry",
    "list_versions": "registry",
    "load_detector": "registry",
    "parse_model_ref": "registry",
    "promote": "registry",
    "register_model": "registry",
}

_ERRORS = ("ArtifactError", "ExportError", "ImageInputError", "PromotionRefused", "RegistryError")
__all__ = sorted([*_EXPORTS, *_ERRORS])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, eager=_ERRORS)
