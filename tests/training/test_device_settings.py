"""The GPU speed settings, exercised on CPU wherever torch runs the same code: what `auto` resolves to per device,
a GPU-configured loader, bf16 and fp16 autocast steps, the grad scaler skipping an inf step, SyncBN in a DDP group,
channels_last, the fused optimizer, and the data-wait share. `tests/gpu/` runs the CUDA-only rest."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.distributed as dist
from tiny_run import without_auto

from pipeline.config import replace
from pipeline.training.device import DeviceSettings, device_settings
from pipeline.training.inputs import build_loaders
from pipeline.training.loop import _optimizer_step, train_steps
from pipeline.training.schedule import resolve_schedule
from pipeline.training.stream import BatchStream
from pipeline.training.trainer import build_trainer

LABEL_MAP = {"category_ids": [1, 2, 3], "names": ["circle", "square", "triangle"]}
CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device object needs no device: the rules are tested


def _batch(size: int = 128, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    target = {"boxes": torch.tensor([[10.0, 12.0, 70.0, 90.0]]), "labels": torch.tensor([1])}
    return torch.randn(2, 3, size, size, generator=generator), [target, dict(target)]


class _OneBatchLoader:
    """What `BatchStream` uses of a DataLoader: the same batch of 2, `n` times an epoch."""

    batch_size = 2

    def __init__(self, n: int = 2) -> None:
        self.batch, self.sampler = _batch(), list(range(2 * n))

    def __iter__(self):
        return iter([self.batch] * (len(self.sampler) // 2))


def _trainer(config, settings: DeviceSettings):
    torch.manual_seed(0)
    config = without_auto(config)
    return build_trainer(config, LABEL_MAP, resolve_schedule(config.train, config.optim, 2), settings)


def _cpu(config, **changes) -> DeviceSettings:
    return dataclasses.replace(device_settings(config, CPU, 1, 2), **changes)


def _loss(trainer) -> float:
    images, targets = _batch()
    trainer.train_module.train()
    with trainer.settings.autocast():
        return float(
            trainer.train_module(images.contiguous(memory_format=torch.channels_last), targets)["loss"].detach()
        )


def test_auto_resolves_per_device(tiny_config, monkeypatch):
    cpu = device_settings(tiny_config, CPU, world_size=2, cpus=8)
    assert (cpu.amp_dtype, cpu.grad_scaler, cpu.sync_bn, cpu.loader_workers) == (None, False, False, 0)
    assert not (cpu.pin_memory or cpu.fused_optimizer or cpu.cudnn_benchmark)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu = device_settings(tiny_config, CUDA, world_size=2, cpus=8)
    assert (gpu.amp_dtype, gpu.grad_scaler, gpu.sync_bn, gpu.loader_workers) == (torch.bfloat16, False, True, 7)
    assert gpu.pin_memory and gpu.fused_optimizer and gpu.cudnn_benchmark
    assert device_settings(tiny_config, CUDA, world_size=1, cpus=1).loader_workers == 2  # at least 2
    assert not device_settings(tiny_config, CUDA, world_size=1, cpus=8).sync_bn  # one GPU: nothing to sync
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100 or T4
    older = device_settings(tiny_config, CUDA, world_size=2, cpus=8)
    assert (older.amp_dtype, older.grad_scaler) == (torch.float16, True)
    explicit = replace(tiny_config, data={"loader_workers": 3}, train={"amp": "bf16", "sync_bn": False})
    chosen = device_settings(explicit, CPU, world_size=2, cpus=8)
    assert (chosen.loader_workers, chosen.amp_dtype, chosen.sync_bn) == (3, torch.bfloat16, False)
    assert "bf16 autocast" in chosen.describe() and "3 loader processes" in chosen.describe()


def test_a_gpu_configured_loader_has_processes_pinned_memory_and_prefetch(tiny_config, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    settings = device_settings(replace(tiny_config, ray={"use_gpu": True}), CUDA, world_size=1, cpus=3)
    inputs = build_loaders(without_auto(tiny_config), settings=settings)
    loader = inputs.train_loader
    assert (loader.num_workers, loader.pin_memory, loader.prefetch_factor) == (2, True, 4)
    assert loader.persistent_workers and inputs.val_loader.num_workers == 2
    loader.sampler.set_epoch(1)
    with pytest.warns(UserWarning, match="pin_memory"):  # no accelerator here: torch says it cannot pin
        images, targets = next(iter(loader))
    assert images.shape == (4, 3, 128, 128) and len(targets) == 4


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_autocast_steps_are_finite_and_close_to_fp32(tiny_config, dtype):
    fp32 = _trainer(tiny_config, _cpu(tiny_config))
    config = replace(tiny_config, train={"amp": dtype})
    mixed = _trainer(config, device_settings(config, CPU, 1, 2))
    assert mixed.settings.amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    assert mixed.scaler.is_enabled() == (dtype == "fp16")  # loss scaling for fp16 only
    reference, loss = _loss(fp32), _loss(mixed)
    assert torch.isfinite(torch.tensor(loss)) and loss == pytest.approx(reference, rel=0.03)
    metrics = train_steps(mixed, BatchStream(_OneBatchLoader(), 1), 2)  # backward and optimizer under autocast
    assert torch.isfinite(torch.tensor(metrics["train_loss"]))


def step_with_an_inf_gradient(trainer, images, targets) -> tuple[list[str], float]:
    """One fp16 optimizer step whose gradient holds an inf: (the weights it changed, new scale / old scale). Also
    `tests/training/test_gpu_paths.py`, on CUDA."""
    with trainer.settings.autocast():
        loss = trainer.train_module(images, targets)["loss"]
    trainer.scaler.scale(loss).backward()
    grad = next(p for p in trainer.model.parameters() if p.grad is not None).grad
    grad[(0,) * grad.ndim] = float("inf")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    scale = trainer.scaler.get_scale()
    _optimizer_step(trainer)
    after = trainer.model.state_dict()
    changed = [k for k in before if "running" not in k and not torch.equal(before[k], after[k])]
    return changed, trainer.scaler.get_scale() / scale


def test_the_grad_scaler_skips_a_step_with_an_inf_gradient(tiny_config):
    config = replace(tiny_config, train={"amp": "fp16"}, optim={"ema_decay": None})
    changed, scale_ratio = step_with_an_inf_gradient(_trainer(config, device_settings(config, CPU, 1, 2)), *_batch())
    assert changed == []  # the step was skipped: no weight moved
    assert scale_ratio == 0.5  # and the loss scale backed off


def test_sync_bn_converts_every_norm_and_keeps_the_checkpoint_format(tiny_config, tmp_path):
    """In a (1-process, gloo) DDP group; training through SyncBN needs CUDA (`tests/gpu`), evaluation does not."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        plain = _trainer(tiny_config, _cpu(tiny_config))
        synced = _trainer(tiny_config, _cpu(tiny_config, sync_bn=True))
    finally:
        dist.destroy_process_group()
    count = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.model.modules())
    assert count == sum(isinstance(m, torch.nn.BatchNorm2d) for m in plain.model.modules()) > 0
    assert synced.model.state_dict().keys() == plain.model.state_dict().keys()  # checkpoints load either way
    images, _ = _batch()
    with torch.no_grad():
        torch.testing.assert_close(synced.model.eval()(images), plain.model.eval()(images))


def _update(trainer) -> torch.Tensor:
    """The change of every float parameter and buffer over 2 optimizer steps, as one vector."""
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if v.dtype.is_floating_point}
    train_steps(trainer, BatchStream(_OneBatchLoader(), 1), 2)
    after = trainer.model.state_dict()
    return torch.cat([(after[k] - v).flatten() for k, v in before.items()])


def test_channels_last_and_the_fused_optimizer_change_no_result(tiny_config):
    base = _trainer(tiny_config, _cpu(tiny_config, channels_last=False))
    fast = _trainer(tiny_config, _cpu(tiny_config, channels_last=True, fused_optimizer=True))
    assert fast.optimizer.defaults.get("fused") is True
    assert _loss(fast) == pytest.approx(_loss(base), rel=1e-4)
    reference, update = _update(base), _update(fast)
    # other kernels sum in another order: the same training step up to float32 rounding, amplified a little by BN
    assert float(torch.nn.functional.cosine_similarity(reference, update, dim=0)) > 0.999
    assert float(update.norm()) == pytest.approx(float(reference.norm()), rel=0.01)


class _SlowLoader(_OneBatchLoader):
    """Each batch takes `delay` seconds to arrive, as from a loader that cannot keep up."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def __iter__(self):
        import time

        for batch in super().__iter__():
            time.sleep(self.delay)  # the thing measured, not a wait for an event
            yield batch


def test_the_data_wait_share_is_the_loaders_part_of_the_period(tiny_config):
    trainer = _trainer(tiny_config, _cpu(tiny_config))
    fed = train_steps(trainer, BatchStream(_OneBatchLoader(), 1), 2)["data_wait_share"]
    starved = train_steps(trainer, BatchStream(_SlowLoader(delay=2.0), 1), 2)
    assert 0 <= fed < 0.2, fed
    share = starved["data_wait_share"]
    assert 4.0 / starved["train_time_s"] == pytest.approx(share, abs=0.02) and share > 0.5
