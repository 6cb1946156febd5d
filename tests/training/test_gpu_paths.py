"""The CUDA-only halves of `test_device_settings.py`: marked `gpu`, skipped (saying so) where torch sees no CUDA.
`benchmarks/gpu_check.sh` runs them first on a GPU machine: `pytest -m gpu`."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.distributed as dist
from tiny_run import without_auto

from pipeline.config import replace
from pipeline.training.device import device_settings
from pipeline.training.loop import train_steps
from pipeline.training.schedule import resolve_schedule
from pipeline.training.stream import BatchStream
from pipeline.training.trainer import build_trainer

pytestmark = pytest.mark.gpu

LABEL_MAP = {"category_ids": [1, 2, 3], "names": ["circle", "square", "triangle"]}


def _batch(device: str = "cuda"):
    generator = torch.Generator().manual_seed(0)
    target = {"boxes": torch.tensor([[10.0, 12.0, 70.0, 90.0]]), "labels": torch.tensor([1])}
    images = torch.randn(2, 3, 128, 128, generator=generator)
    return images.to(device), [{k: v.to(device) for k, v in target.items()} for _ in range(2)]


class _Loader:
    batch_size = 2

    def __init__(self) -> None:
        self.batch, self.sampler = _batch("cpu"), list(range(4))

    def __iter__(self):
        return iter([self.batch] * 2)


def _trainer(config, **changes):
    settings = dataclasses.replace(device_settings(config, torch.device("cuda"), 1, 4), **changes)
    torch.manual_seed(0)
    config = without_auto(config)
    return build_trainer(config, LABEL_MAP, resolve_schedule(config.train, config.optim, 2), settings)


def _loss(trainer) -> float:
    images, targets = _batch()
    trainer.train_module.train()
    with trainer.settings.autocast():
        return float(trainer.train_module(images, targets)["loss"].detach())


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_steps_on_cuda_are_finite_and_close_to_fp32(tiny_config, amp):
    fp32 = _trainer(replace(tiny_config, train={"amp": "none"}))
    mixed = _trainer(replace(tiny_config, train={"amp": amp}))
    assert _loss(mixed) == pytest.approx(_loss(fp32), rel=0.03)
    metrics = train_steps(mixed, BatchStream(_Loader(), 1), 2)
    assert torch.isfinite(torch.tensor(metrics["train_loss"])) and metrics["gpu_memory_peak_gb"] > 0


def test_the_grad_scaler_skips_an_inf_step_on_cuda(tiny_config):
    from test_device_settings import step_with_an_inf_gradient

    trainer = _trainer(replace(tiny_config, train={"amp": "fp16"}, optim={"ema_decay": None}))
    changed, scale_ratio = step_with_an_inf_gradient(trainer, *_batch())
    assert changed == [] and scale_ratio == 0.5


def test_sync_bn_trains_in_a_one_process_nccl_group(tiny_config, tmp_path):
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        trainer = _trainer(tiny_config, sync_bn=True)
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in trainer.model.modules())
        metrics = train_steps(trainer, BatchStream(_Loader(), 1), 2)
        assert torch.isfinite(torch.tensor(metrics["train_loss"]))
    finally:
        dist.destroy_process_group()


def test_channels_last_gives_the_same_outputs_on_cuda(tiny_config):
    images, _ = _batch()
    plain = _trainer(tiny_config, channels_last=False).model.eval()
    fast = _trainer(tiny_config, channels_last=True).model.eval()
    with torch.no_grad():
        for a, b in zip(plain(images)[0], fast(images.contiguous(memory_format=torch.channels_last))[0], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_a_compiled_train_step_matches_eager(tiny_config):
    eager = _trainer(replace(tiny_config, train={"amp": "none"}))
    compiled = _trainer(replace(tiny_config, train={"amp": "none", "compile": True}))
    assert compiled.settings.compile_mode == "default"
    assert _loss(compiled) == pytest.approx(_loss(eager), rel=1e-3)


def test_the_loader_pins_batches_and_the_copy_is_asynchronous(tiny_config):
    from pipeline.training.inputs import build_loaders

    settings = device_settings(replace(tiny_config, ray={"use_gpu": True}), torch.device("cuda"), 1, 3)
    loader = build_loaders(tiny_config, settings=settings).train_loader
    loader.sampler.set_epoch(1)
    images, _ = next(iter(loader))
    assert images.is_pinned() and loader.num_workers == 2
