"""The MLflow model registry side: log a detector as a pyfunc logged model, register it as a new version with
descriptive tags, move the `champion` / `challenger` aliases, and look versions up by alias or number.

All calls take an explicit tracking URI; MLflow's model logging only reads the global one, so it is set for
the duration of a call and restored afterwards (`using_tracking_uri`).
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config.tiling import TilingSpec
from pipeline.registry.errors import PromotionRefused, RegistryError
from pipeline.tracking import SQLITE_PREFIX

if TYPE_CHECKING:  # torch and effdet_core load only where a model is built: `registry list` stays quick
    from effdet_core import EfficientDet, PostprocessConfig
    from pipeline.data import LabelMap

CHAMPION = "champion"
CHALLENGER = "challenger"
DEFAULT_EXPERIMENT = "model-registry"
MODEL_NAME = "model"  # the logged model's name inside its run / experiment
_RUNTIME_PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "safetensors",
    "numpy",
    "pandas",
    "pillow",
    "simplejpeg",
    "tifffile",  # TIFF requests (orthophotos): pipeline/data/tiff.py
    "imagecodecs",
    "albumentations",
    "opencv-python-headless",
    "pycocotools",
    "mlflow",
    "onnxruntime",  # the serving graph's backend
)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


@dataclass(frozen=True)
class Registration:
    """What `register_model` did: the new version, its aliases and why champion moved or not."""

    name: str
    version: str
    model_uri: str  # models:/NAME/VERSION
    aliases: tuple[str, ...]
    decision: Decision


@contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's global tracking/registry URI at `uri` for the block, then restore the previous state."""
    import mlflow

    saved_env = os.environ.get("MLFLOW_TRACKING_URI")
    saved_uri = mlflow.get_tracking_uri() if saved_env is not None else None
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_uri)  # None resets MLflow to "unset" (its default resolution)
        mlflow.set_registry_uri(None)
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env


def client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """The id of experiment `name`, created with its artifacts beside a SQLite database (so any cwd works)."""
    from pipeline import tracking

    return tracking.ensure_experiment(client(tracking_uri), name, tracking_uri)


def pip_requirements() -> list[str]:
    """Pinned runtime requirements (explicit, so MLflow need not load the model again to infer them).

    The pipeline package itself is not on PyPI: serve with `--env-manager local` from an environment
    where it is installed.
    """
    out = []
    for name in _RUNTIME_PACKAGES:
        try:
            out.append(f"{name}=={importlib_metadata.version(name)}")
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def log_detector(
    model: EfficientDet,
    label_map: LabelMap,
    tracking_uri: str,
    run_id: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    postprocess: PostprocessConfig | None = None,
    onnx_graph: str | os.PathLike | None = None,
    tiling: TilingSpec | None = None,
) -> str:
    """Log `model` as a pyfunc logged model (in `run_id`'s experiment when given), with its serving graph
    `onnx_graph` when given and its training windows `tiling`; returns its model id."""
    import mlflow
    from mlflow.models import Model

    from pipeline.registry.package import write_package
    from pipeline.registry.pyfunc_model import ENTRY_FILE, PYFUNC_SETTINGS, input_example, model_signature

    c = client(tracking_uri)
    experiment_id = c.get_run(run_id).info.experiment_id if run_id else ensure_experiment(tracking_uri, experiment)
    logged = c.create_logged_model(experiment_id, name=MODEL_NAME, source_run_id=run_id)
    with tempfile.TemporaryDirectory(prefix="effdet-package-") as tmp, using_tracking_uri(tracking_uri):
        artifacts = write_package(model, label_map, tmp, postprocess, onnx_graph, tiling)
        Model.log(
            artifact_path=None,  # deprecated in MLflow 3 in favour of name, but still a required parameter
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            model_id=logged.model_id,
            run_id=run_id,
            python_model=str(ENTRY_FILE),  # models from code: no pickled PythonModel
            artifacts=artifacts,
            signature=model_signature(),
            model_config=dict(PYFUNC_SETTINGS),  # overridable at load time: load_model(uri, model_config={...})
            input_example=input_example(),
            pip_requirements=pip_requirements(),
        )
    return logged.model_id


@contextmanager
def promotion_lock(tracking_uri: str, name: str) -> Iterator[None]:
    """Serialise "read the champion, decide, move the alias" between processes and threads that register versions
    of `name` in the same SQLite store (an exclusive lock on a file beside the database): without it, two
    registrations that both beat the old champion could both move the alias, the worse one last.

    MLflow's registry has no compare-and-set, so a tracking server's store is not locked here: there the window is
    one read and one write apart (note in docs/ARCHITECTURE.md)."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        yield
        return
    import fcntl

    db = Path(tracking_uri[len(SQLITE_PREFIX) :])
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    with open(db.with_name(f".{db.name}.{safe}.champion.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def decide_promotion(candidate: Mapping[str, str], champion: Mapping[str, str] | None, force: bool = False) -> Decision:
    """Whether `champion` should move to `candidate` (both: version tags with val_AP and dataset_fingerprint)."""
    if champion is None:
        return Decision(True, "no champion yet")
    if force:
        return Decision(True, "forced")
    cand_fp, champ_fp = candidate.get("dataset_fingerprint"), champion.get("dataset_fingerprint")
    if not cand_fp or cand_fp != champ_fp:
        return Decision(
            False,
            f"validated on a different dataset (fingerprint {cand_fp} vs champion's {champ_fp}); "
            "APs are not comparable (use --force to promote anyway)",
        )
    try:
        cand_ap, champ_ap = float(candidate["val_AP"]), float(champion["val_AP"])
    except (KeyError, ValueError):
        return Decision(False, "val_AP missing on the candidate or the champion (use --force to promote anyway)")
    if cand_ap > champ_ap:
        return Decision(True, f"val_AP {cand_ap:.4f} beats the champion's {champ_ap:.4f}")
    return Decision(False, f"val_AP {cand_ap:.4f} does not beat the champion's {champ_ap:.4f}")


def alias_version(tracking_uri: str, name: str, alias: str):
    """The ModelVersion behind `alias`, or None when the alias is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return client(tracking_uri).get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _ensure_registered_model(c, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(name)
    except MlflowException:
        try:
            c.create_registered_model(name, description="EfficientDet detector (pipeline.registry)")
        except MlflowException:  # created concurrently by another process
            c.get_registered_model(name)


def register_model(
    model: EfficientDet,
    label_map: LabelMap,
    name: str,
    tracking_uri: str,
    metrics: Mapping[str, float],
    dataset_fingerprint: str,
    run_id: str | None = None,
    *,
    force: bool = False,
    postprocess: PostprocessConfig | None = None,
    extra_tags: Mapping[str, str] | None = None,
    measure_latency: bool = True,
    onnx: bool = True,
    parity_data: str | os.PathLike | None = None,
    tiling: TilingSpec | None = None,
) -> Registration:
    """Log `model`, register it as a new version of `name` with tags, and move `champion` only if it is better.

    `metrics` needs val_AP and val_AP50 (or AP / AP50) on the validation set whose `dataset_fingerprint` is given.
    The new version gets `challenger` when it does not become champion. With `onnx`, the version also carries
    the ONNX Runtime serving graph, its detections compared with PyTorch's on val images of `parity_data` (a
    dataset directory; generated images without one), the figures in `onnx_*` tags. `tiling`: the windows the
    model was trained on; the package carries them (so the pyfunc and `mlflow models serve` slice large images as
    the model was trained) and so does the version's `tiling` tag.
    """

    from pipeline.registry.metadata import code_version, model_tags, pick_metrics

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name or ""):
        raise ValueError(f"model name {name!r}: use letters, digits, '_', '.', '-'")
    scores = pick_metrics(metrics)  # fail before any logging
    tags = {
        **model_tags(model, latency=measure_latency),
        **{k: f"{v:.6f}" for k, v in scores.items()},
        "dataset_fingerprint": dataset_fingerprint,
        "code_version": code_version(),
        "tiling": json.dumps(tiling.to_dict()) if tiling is not None else "off",
        **(extra_tags or {}),
    }
    if run_id:
        tags["run_id"] = run_id
    with tempfile.TemporaryDirectory(prefix="effdet-serving-") as tmp:
        graph = None
        if onnx:
            graph, onnx_tags = _serving_graph(model, label_map, postprocess, tmp, parity_data)
            tags |= onnx_tags
        else:
            tags["onnx"] = "off"
        model_id = log_detector(
            model, label_map, tracking_uri, run_id=run_id, postprocess=postprocess, onnx_graph=graph, tiling=tiling
        )
    c = client(tracking_uri)
    _ensure_registered_model(c, name)
    # the client call (not mlflow.register_model) records both the logged model id and the source run; MLflow
    # resolves the models:/ source through the global URI, hence the context
    with using_tracking_uri(tracking_uri):
        version = c.create_model_version(name, f"models:/{model_id}", run_id=run_id, tags=tags, model_id=model_id)
    with promotion_lock(tracking_uri, name):  # read the champion, decide, move the alias: one step per store
        champion = alias_version(tracking_uri, name, CHAMPION)
        decision = decide_promotion(tags, dict(champion.tags) if champion else None, force)
        alias = CHAMPION if decision.promote else CHALLENGER
        c.set_registered_model_alias(name, alias, version.version)
    return Registration(name, str(version.version), f"models:/{name}/{version.version}", (alias,), decision)


def _serving_graph(model, label_map, postprocess, out_dir: str, parity_data) -> tuple[Path | None, dict[str, str]]:
    from effdet_core import PostprocessConfig
    from pipeline.registry.package import ModelPackage
    from pipeline.registry.serving_graph import parity_images, prepare_serving_graph

    # a copy: export moves the network to the CPU and PyTorch prediction makes it channels_last
    package = ModelPackage(copy.deepcopy(model).eval(), label_map, postprocess or PostprocessConfig())
    images, source = parity_images(parity_data)
    return prepare_serving_graph(package, out_dir, images, source)


def promote(tracking_uri: str, name: str, version: str, alias: str = CHAMPION, force: bool = False) -> Decision:
    """Point `alias` at `version`; for `champion` only when it beats the current one (or `force`)."""
    with promotion_lock(tracking_uri, name):
        return _promote(tracking_uri, name, version, alias, force)


def _promote(tracking_uri: str, name: str, version: str, alias: str, force: bool) -> Decision:
    mv = get_version(tracking_uri, f"{name}/{version}")
    decision = Decision(True, f"alias {alias!r} is not guarded")
    if alias == CHAMPION:
        current = alias_version(tracking_uri, name, CHAMPION)
        if current is not None and current.version == mv.version:
            return Decision(True, f"version {mv.version} already is the champion")
        decision = decide_promotion(dict(mv.tags), dict(current.tags) if current else None, force)
        if not decision.promote:
            raise PromotionRefused(f"{name} version {mv.version} not promoted to champion: {decision.reason}")
    c = client(tracking_uri)
    c.set_registered_model_alias(name, alias, mv.version)
    if alias == CHAMPION and CHALLENGER in (mv.aliases or []):
        c.delete_registered_model_alias(name, CHALLENGER)  # the champion is nobody's challenger
    return decision


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of a reference: models:/NAME@ALIAS, models:/NAME/VERSION, the same without
    the models:/ prefix, or a bare NAME (meaning NAME@champion)."""
    body = ref.removeprefix("models:/")
    match = re.fullmatch(r"([^@/]+)(?:@([^@/]+)|/(\d+))?", body)
    if not match:
        raise ValueError(
            f"model reference {ref!r} not understood; use NAME, NAME@ALIAS or NAME/VERSION "
            "(optionally prefixed by models:/)"
        )
    name, alias, version = match.groups()
    if alias is None and version is None:
        alias = CHAMPION
    return name, alias, version


def _registered_model(c, name: str, tracking_uri: str):
    from mlflow.exceptions import MlflowException

    try:
        return c.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in c.search_registered_models())
        raise RegistryError(f"no registered model {name!r} in {tracking_uri}; registered models: {names}") from None


def get_version(tracking_uri: str, ref: str):
    """The ModelVersion a reference names; a missing model, alias or version is an error listing what exists."""
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_model_ref(ref)
    c = client(tracking_uri)
    registered = _registered_model(c, name, tracking_uri)
    if alias is not None:
        if alias not in registered.aliases:
            raise RegistryError(f"model {name!r} has no alias {alias!r}; aliases: {dict(registered.aliases)}")
        return c.get_model_version_by_alias(name, alias)
    try:
        return c.get_model_version(name, version)
    except MlflowException:
        versions = sorted(int(v.version) for v in c.search_model_versions(f"name='{name}'"))
        raise RegistryError(f"model {name!r} has no version {version}; versions: {versions}") from None


def list_versions(tracking_uri: str, name: str | None = None) -> list:
    """ModelVersions (all models, or one), newest version first within each model name."""
    c = client(tracking_uri)
    if name is not None:
        _registered_model(c, name, tracking_uri)  # a clear error for an unknown name
    versions = c.search_model_versions(f"name='{name}'" if name else None)
    return sorted(versions, key=lambda v: (v.name, -int(v.version)))


def aliases_by_version(tracking_uri: str, name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for alias, version in client(tracking_uri).get_registered_model(name).aliases.items():
        out.setdefault(str(version), []).append(alias)
    return out


def load_detector(
    tracking_uri: str,
    ref: str,
    batch_size: int = 8,
    backend: str | None = None,
    threads: int | None = None,
    use_gpu: bool = False,
    slice: str = "auto",
):
    """(Detector, ModelVersion) of a reference, loaded through MLflow's pyfunc loader exactly as serving does.
    `backend` None: ONNX Runtime when the version carries a serving graph (on a GPU: when onnxruntime has CUDA),
    PyTorch otherwise; `threads`: ONNX Runtime's intra-op threads. `slice`: auto (the windows the version was
    trained with, its `tiling` tag), off, or a window side in px (`pipeline.config.tiling.slice_setting`)."""
    import mlflow.pyfunc

    from pipeline.config.tiling import slice_setting, tiling_from_tag
    from pipeline.registry.predict import Detector

    slice_setting(slice, None)  # a bad flag fails before the model loads
    mv = get_version(tracking_uri, ref)
    settings = {"backend": backend or "auto", "threads": threads or 0, "use_gpu": use_gpu, "slice": slice}
    has_settings = "onnx" in mv.tags  # versions logged before the backends take no model_config
    with using_tracking_uri(tracking_uri):
        uri = f"models:/{mv.name}/{mv.version}"
        pyfunc = mlflow.pyfunc.load_model(uri, model_config=settings if has_settings else None)
    detector = pyfunc.unwrap_python_model().detector
    if not has_settings and (backend, threads, use_gpu) != (None, None, False):
        detector = Detector(detector.package, batch_size, backend, threads, use_gpu)
    detector.batch_size = batch_size
    # the package's windows; versions registered before packages carried them have only the tag
    trained = detector.package.tiling or tiling_from_tag(mv.tags.get("tiling"))
    detector.tiling = slice_setting(slice, trained)
    return detector, mv
