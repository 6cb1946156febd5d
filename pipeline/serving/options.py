"""The settings of a served model: what `serve` takes as flags, what a Serve config file carries as the
application's `args`, checked the same way in both (an unknown key or a bad value names itself before Ray starts).
No Ray import: the CLI and the tests read these without a cluster."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from pipeline.data.decode import DEFAULT_MAX_IMAGE_PIXELS

BACKENDS = ("auto", "onnxruntime", "torch")
IMPORT_PATH = "pipeline.serving.app:app_builder"  # the Serve config file's entry (an application builder)


@dataclass(frozen=True)
class ServeOptions:
    model: str  # models:/NAME@ALIAS (followed) or models:/NAME/VERSION (pinned)
    tracking_uri: str
    min_replicas: int = 1
    max_replicas: int = 1  # above min_replicas: autoscaling on each replica's ongoing requests
    cpus_per_replica: float = 1.0  # also the inference threads (ONNX Runtime intra-op, torch)
    use_gpu: bool = False
    gpus_per_replica: float = 1.0  # fractional: several replicas share a GPU
    max_batch_size: int = 8  # concurrent requests answered by one model call
    batch_wait_ms: float = 10.0  # how long a request waits for others to share its call
    follow_interval_s: float = 30.0  # how often each replica reads the alias
    backend: str = "auto"  # auto: ONNX Runtime where the version carries its serving graph
    slice: str = "auto"  # auto (as trained) | off | PX (`predict --slice`)
    max_body_mb: float = 64.0
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    request_timeout_s: float = 60.0  # Serve's proxy answers 408 past it: no request hangs
    host: str = "127.0.0.1"
    port: int = 8000
    name: str = field(default="")  # the Serve application's name; default effdet-<model name>

    def __post_init__(self) -> None:
        from pipeline.config.tiling import slice_setting
        from pipeline.registry.registry import parse_model_ref

        model_name = parse_model_ref(self.model)[0]  # ValueError naming the reference
        if not self.name:
            object.__setattr__(self, "name", f"effdet-{model_name}")
        positive = ("cpus_per_replica", "gpus_per_replica", "max_batch_size", "follow_interval_s", "max_body_mb")
        for key in (*positive, "max_image_pixels", "request_timeout_s"):
            if not getattr(self, key) > 0:
                raise ValueError(f"serve: {key} must be positive, got {getattr(self, key)!r}")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"serve: replicas must satisfy 1 <= MIN <= MAX, got {self.min_replicas}-{self.max_replicas}"
            )
        if self.batch_wait_ms < 0:
            raise ValueError(f"serve: batch_wait_ms must be >= 0, got {self.batch_wait_ms!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"serve: backend {self.backend!r}: choose one of {list(BACKENDS)}")
        if not 0 < self.port < 65536:
            raise ValueError(f"serve: port must be in 1-65535, got {self.port}")
        slice_setting(self.slice, None)  # a bad slice names itself

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ServeOptions:
        """A config file's `args` -> options: unknown keys and missing required ones are named."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"serve: unknown setting(s) {unknown}; known: {sorted(known)}")
        missing = [key for key in ("model", "tracking_uri") if key not in values]
        if missing:
            raise ValueError(f"serve: missing setting(s) {missing}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas > self.min_replicas

    def deployment_options(self) -> dict[str, Any]:
        """Serve deployment options: replicas (fixed, or autoscaled on ongoing requests per replica), resources,
        and room for a batch being filled while the previous one runs."""
        resources: dict[str, Any] = {"num_cpus": self.cpus_per_replica}
        if self.use_gpu:
            resources["num_gpus"] = self.gpus_per_replica
        options: dict[str, Any] = {
            "name": "detector",
            "ray_actor_options": resources,
            "max_ongoing_requests": 2 * self.max_batch_size,
            # a replica shutting down (scaled in, or the app updated) answers what it holds first
            "graceful_shutdown_timeout_s": max(20.0, self.request_timeout_s),
        }
        if self.autoscaling:
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.max_batch_size,  # a replica's full batch
            }
        else:
            options["num_replicas"] = self.min_replicas
        return options

    def serve_config(self) -> dict[str, Any]:
        """A Serve config file (`serve deploy FILE`) running these options on a cluster with the project installed."""
        args = {k: v for k, v in self.to_dict().items() if k not in ("host", "port")}
        return {
            "proxy_location": "EveryNode",
            "http_options": {"host": self.host, "port": self.port, "request_timeout_s": self.request_timeout_s},
            "applications": [{"name": self.name, "route_prefix": "/", "import_path": IMPORT_PATH, "args": args}],
        }


def parse_replicas(text: str) -> tuple[int, int]:
    """`--replicas N` or `MIN-MAX` -> (min, max)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not match:
        raise ValueError(f"--replicas: expected N or MIN-MAX (e.g. 1-4), got {text!r}")
    low = int(match.group(1))
    return low, int(match.group(2) or low)
