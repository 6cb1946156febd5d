"""The model a replica serves, and how it follows the registry's alias.

`ModelFollower` loads the version a reference names; for `NAME@ALIAS` it re-reads the alias when asked (at an
interval, or on demand) and, when it has moved, loads the new version and warms it up *beside* the one serving,
then swaps the reference in one assignment: requests already running finish on the version they started with,
the next ones get the new one, none waits on a load. A version that fails to load leaves the old one serving; its
reason is logged once and kept (`GET /model`). No Ray here: a replica runs `check` in a thread of its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.registry.predict import Detector
from pipeline.registry.registry import get_version, load_detector, parse_model_ref


@dataclass(frozen=True)
class Served:
    """One loaded version: its detector and what `GET /model` and every answer say of it."""

    detector: Detector
    name: str
    version: str
    tags: dict[str, str]
    loaded_at: float = field(default_factory=time.time)

    def describe(self) -> dict[str, Any]:
        config = self.detector.package.config
        tiling = self.detector.tiling
        metrics = {key: float(self.tags[key]) for key in ("val_AP", "val_AP50") if key in self.tags}
        return {
            "name": self.name,
            "version": self.version,
            "backend": self.detector.backend,
            "classes": list(self.detector.label_map.names),
            "input_size": list(config.image_size),
            "slice": {"size": tiling.size, "overlap": tiling.overlap} if tiling is not None else "off",
            "metrics": metrics,
            "loaded_at": self.loaded_at,
        }


Loader = Callable[[str, str], Served]  # (model name, version) -> Served


class ModelFollower:
    """The served version of `ref`: pinned (`NAME/VERSION`) or following an alias (`NAME@ALIAS`)."""

    def __init__(self, tracking_uri: str, ref: str, load: Loader, log: Callable[[str], None] = print):
        self.tracking_uri = tracking_uri
        self.name, self.alias, self.pinned = parse_model_ref(ref)
        self.load, self.log = load, log
        self.failed: dict[str, str] = {}  # version -> why it could not be served
        self.last_check: float | None = None
        self._lock = threading.Lock()  # one check at a time (the interval thread and an on-demand refresh)
        mv = get_version(tracking_uri, ref)  # RegistryError naming what exists
        self.current = load(self.name, str(mv.version))  # a version that cannot load fails the replica's start

    def check(self, retry_failed: bool = False) -> dict[str, Any]:
        """Read the alias; when it names another version, load and warm it, then serve it. Returns what happened:
        {"action": pinned | unchanged | moved | failed | skipped, "version": ..., ...}."""
        if self.pinned is not None:
            return {"action": "pinned", "version": self.current.version}
        with self._lock:
            self.last_check = time.time()
            try:
                target = str(get_version(self.tracking_uri, f"{self.name}@{self.alias}").version)
            except Exception as e:  # the registry unreachable, the alias deleted: keep serving what we have
                return self._refused("alias", f"cannot read {self.name}@{self.alias}: {type(e).__name__}: {e}")
            if target == self.current.version:
                return {"action": "unchanged", "version": target}
            if target in self.failed and not retry_failed:
                return {"action": "skipped", "version": self.current.version, "target": target}
            try:
                served = self.load(self.name, target)
            except Exception as e:
                return self._refused(target, f"{type(e).__name__}: {e}")
            previous, self.current = self.current.version, served
            self.failed.pop(target, None)
            self.log(f"serve: {self.name}@{self.alias} moved from version {previous} to {target}: now serving {target}")
            return {"action": "moved", "version": target, "previous": previous}

    def _refused(self, target: str, reason: str) -> dict[str, Any]:
        if self.failed.get(target) != reason:  # once per version and reason, not at every interval
            self.log(f"serve: keeping version {self.current.version}: version {target} not served: {reason}")
        self.failed[target] = reason
        return {"action": "failed", "version": self.current.version, "target": target, "error": reason}


def registry_loader(
    tracking_uri: str,
    backend: str | None,
    threads: int,
    use_gpu: bool,
    slice: str,
    batch_size: int,
) -> Loader:
    """Versions loaded as `predict` loads them (MLflow's pyfunc loader, the same backend and slicing rules),
    warmed up by one pass of a blank image so the first request does not pay the session's start."""

    def load(name: str, version: str) -> Served:
        detector, mv = load_detector(
            tracking_uri, f"{name}/{version}", batch_size, backend, threads, use_gpu, slice=slice
        )
        height, width = detector.package.config.image_size
        detector.run_passes([detector.preprocess(np.zeros((height, width, 3), np.uint8), 0)])
        return Served(detector, name, str(mv.version), dict(mv.tags))

    return load
