"""What the configuration's speed settings mean on the device a worker actually has.

The config says what the user wants (`train.amp: auto`, `data.loader_workers: auto`, `train.sync_bn: true`...);
`device_settings` turns it into what this worker does, once, so the loop and the loaders never test the device
type themselves. The rules, and why:

- precision: `auto` is bf16 autocast on a GPU that has it (Ampere and later: no loss scaling needed), fp16 with a
  grad scaler on older GPUs, fp32 on CPU (CPU autocast is slower than fp32 for these convolutions without AMX).
  An explicit `bf16`/`fp16` is honoured everywhere, CPU included (that is how CI tests the same code path).
- SyncBN (the official recipe: BN statistics over the global batch) needs more than one GPU worker; gloo on CPU has
  no SyncBatchNorm.
- loader processes: on a GPU the training process must not decode and augment (the GPU would wait about two thirds
  of the time at 512 px: `docs/SCALING.md`), so `auto` is every CPU of the worker but the one driving the GPU, at
  least 2; on CPU, the training process already uses every CPU of the worker, so `auto` is 0 (in process).
- pinned host memory makes the host-to-GPU copy asynchronous (`non_blocking=True`); meaningless on CPU.
- optimizers: the fused (one kernel for all parameters) SGD/AdamW on GPU; torch's default elsewhere.
- cuDNN autotuning pays for fixed input sizes, which detection here always has.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from pipeline.config import PipelineConfig

AUTO = "auto"


@dataclass(frozen=True)
class DeviceSettings:
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype; None = fp32
    grad_scaler: bool  # fp16 needs loss scaling; bf16 and fp32 do not
    sync_bn: bool
    channels_last: bool
    compile_mode: str | None  # torch.compile mode; None = eager
    loader_workers: int
    pin_memory: bool
    fused_optimizer: bool
    cudnn_benchmark: bool
    ray_data: bool = False  # data.engine: ray (Ray Data tasks prepare the batches; no loader processes here)

    def autocast(self):
        """The autocast context of this precision (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        """`cuda: bf16 autocast, SyncBN, channels_last, fused optimizer, 7 loader processes (pinned)`."""
        precision = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + grad scaler"}
        parts = [precision[self.amp_dtype]]
        parts += [name for name, on in (("SyncBN", self.sync_bn), ("channels_last", self.channels_last)) if on]
        if self.compile_mode:
            parts.append(f"torch.compile ({self.compile_mode})")
        if self.fused_optimizer:
            parts.append("fused optimizer")
        loader = f"{self.loader_workers} loader processes" if self.loader_workers else "loading in process"
        loader = "batches from Ray Data tasks" if self.ray_data else loader
        parts.append(loader + (" (pinned)" if self.pin_memory else ""))
        return f"{self.device.type}: {', '.join(parts)}"


def worker_cpus(config: PipelineConfig, in_ray: bool) -> int:
    """The CPUs this training process may use: its Ray share, or the whole machine's (the process's affinity)."""
    if in_ray:
        return max(1, int(config.ray.cpus_per_worker))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "none" or (amp == AUTO and device.type != "cuda"):
        return None
    if amp == AUTO:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def resolve_loader_workers(value: int | str, on_gpu: bool, cpus: int) -> int:
    if value != AUTO:
        return int(value)
    return max(2, cpus - 1) if on_gpu else 0


def device_settings(config: PipelineConfig, device: torch.device, world_size: int, cpus: int) -> DeviceSettings:
    on_gpu, ray_data = device.type == "cuda", config.data.engine == "ray"
    amp_dtype = resolve_amp(config.train.amp, device)
    return DeviceSettings(
        device=device,
        amp_dtype=amp_dtype,
        grad_scaler=amp_dtype == torch.float16,
        sync_bn=config.train.sync_bn and on_gpu and world_size > 1,
        channels_last=config.train.channels_last,
        compile_mode=config.train.compile_mode if config.train.compile else None,
        loader_workers=0 if ray_data else resolve_loader_workers(config.data.loader_workers, on_gpu, cpus),
        pin_memory=on_gpu,
        fused_optimizer=on_gpu,
        cudnn_benchmark=on_gpu and config.train.cudnn_benchmark,
        ray_data=ray_data,
    )


def apply_backend_flags(settings: DeviceSettings) -> None:
    """Process-wide switches (cuDNN autotuning, TF32 matmuls on Ampere+ for the fp32 parts)."""
    if settings.device.type == "cuda":
        torch.backends.cudnn.benchmark = settings.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def ignored_on_cpu(config: PipelineConfig) -> list[str]:
    """GPU-only settings a CPU run cannot honour, said out loud instead of silently dropped."""
    if config.ray.use_gpu:
        return []
    notes = []  # SyncBN (on by default) is not said: each worker's device line shows what it runs
    if config.train.amp in ("bf16", "fp16"):
        notes.append(f"train.amp={config.train.amp} on CPU: autocast runs, usually slower than fp32 (auto = fp32 here)")
    if config.train.compile:
        notes.append("train.compile on CPU: the first steps compile for minutes; worth it for long runs only")
    return notes
