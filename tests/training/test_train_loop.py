"""The plain-PyTorch loop in one process (no Ray, no MLflow): NaN detection, accumulation, a schedule in steps,
and a stop inside an epoch resumed exactly where it stopped."""

from __future__ import annotations

import pytest
import torch
from tiny_run import without_auto
from torch import nn

from pipeline.config import replace
from pipeline.data import DetectionDataset
from pipeline.training.faults import InjectedFault
from pipeline.training.loop import fit, train_steps
from pipeline.training.progress import format_progress
from pipeline.training.report import best_state
from pipeline.training.schedule import resolve_schedule
from pipeline.training.stream import BatchStream
from pipeline.training.trainer import build_trainer

LABEL_MAP = {"category_ids": [1, 2, 3], "names": ["circle", "square", "triangle"]}


class _ListLoader:
    """The parts of a DataLoader that `BatchStream` uses, over fixed batches of 2 images."""

    batch_size = 2

    def __init__(self, n: int, size: int = 128) -> None:
        target = {"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([1])}
        self.batches = [(torch.randn(2, 3, size, size), [target, target]) for _ in range(n)]
        self.sampler = list(range(2 * n))

    def __iter__(self):
        return iter(self.batches)


class _NanAtCall(nn.Module):
    """Wraps the training module; its loss turns NaN at the `bad_call`-th forward."""

    def __init__(self, inner: nn.Module, bad_call: int) -> None:
        super().__init__()
        self.inner, self.bad_call, self.calls = inner, bad_call, 0

    def forward(self, images, targets):
        self.calls += 1
        losses = self.inner(images, targets)
        if self.calls == self.bad_call:
            losses = {**losses, "loss": losses["loss"] * float("nan")}
        return losses


def _trainer(config, steps_per_epoch: int):
    schedule = resolve_schedule(config.train, config.optim, steps_per_epoch)
    return build_trainer(without_auto(config), LABEL_MAP, schedule, torch.device("cpu"))


def test_nan_loss_raises_naming_step_epoch_and_batch(tiny_config):
    trainer = _trainer(tiny_config, steps_per_epoch=3)
    trainer.train_module = _NanAtCall(trainer.train_module, bad_call=5)
    stream = BatchStream(_ListLoader(3), grad_accum_steps=1)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 5 \(epoch 2, batch 2\)"):
        train_steps(trainer, stream, 6)


def test_gradient_accumulation_steps_the_optimizer_every_n_batches(tiny_config):
    config = replace(tiny_config, train={"grad_accum_steps": 2})
    trainer = _trainer(config, steps_per_epoch=3)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    stream = BatchStream(_ListLoader(5), grad_accum_steps=2)
    metrics = train_steps(trainer, stream, 3)
    assert trainer.scheduler.last_epoch == 3  # 5 batches, accumulate 2: steps after batches 2, 4 and the last
    assert trainer.ema.updates == 3
    assert metrics["train_images"] == 10
    assert (stream.position.step, stream.position.epoch, stream.position.batch) == (3, 0, 5)
    stream.next_step()  # the next step starts the next epoch
    assert (stream.position.epoch, stream.position.batch) == (1, 2)
    changed = [
        k for k, v in trainer.model.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])
    ]
    assert changed, "the optimizer must have changed the weights"


def _record_image_ids(monkeypatch) -> list:
    """Image ids (with the window, for a tiled run) of every training item loaded, in order (loader_workers=0
    loads in this process)."""
    seen: list = []
    original = DetectionDataset.__getitem__

    def getitem(self, index):
        item = original(self, index)
        if self.split == "train":
            target = item[1]
            seen.append((target["image_id"], target["window"]) if "window" in target else target["image_id"])
        return item

    monkeypatch.setattr(DetectionDataset, "__getitem__", getitem)
    return seen


def test_a_run_stopped_inside_an_epoch_resumes_with_the_same_images_and_schedule(tiny_config, tmp_path, monkeypatch):
    """16 images, batch 4: 4 steps per epoch. 10 steps, evaluated every 3: checkpoints at steps 3, 6, 9, 10. A
    crash as epoch 3 starts (step 8) resumes from step 6, two batches into epoch 2, and must train exactly the
    images, augmentation and learning rates of the run that never stopped."""
    seen = _record_image_ids(monkeypatch)
    base = replace(  # the default augmentation, seeded per (seed, epoch, image): the weights can match exactly
        tiny_config,
        train={"epochs": None, "steps": 10, "eval_every": "3 steps"},
        ray={"num_workers": 1},
    )
    periods: list[tuple[int, float]] = []
    val_ap: dict[int, float] = {}  # step -> val AP, of the run that crashes and resumes

    def record(trainer, metrics):
        periods.append((int(metrics["step"]), trainer.optimizer.param_groups[0]["lr"]))
        val_ap[int(metrics["step"])] = metrics["val_AP"]

    straight = fit(base, tmp_path / "straight", on_period_end=record)
    straight_ids, straight_periods = list(seen), list(periods)
    assert [p for p, _ in straight_periods] == [3, 6, 9, 10] and len(straight_ids) == 40

    seen.clear(), periods.clear(), val_ap.clear()
    crashing = replace(base, train={"fault_marker": str(tmp_path / "fault"), "fault_epoch": 3})
    with pytest.raises(InjectedFault, match="epoch 3"):
        fit(crashing, tmp_path / "crash", on_period_end=record)
    before_crash = list(seen)
    assert [p for p, _ in periods] == [3, 6] and len(before_crash) == 32  # steps 1-8 loaded, checkpoint at 6
    seen.clear()
    final = fit(crashing, tmp_path / "crash", resume=True, on_period_end=record)
    assert before_crash[:24] + seen == straight_ids  # steps 7-10 after the resume: the same images, same order
    assert periods == straight_periods  # the same evaluation points and learning rates
    assert final.position == {"step": 10, "epoch": 2, "batch": 2} and "val_AP50" in final.metrics
    assert sorted(val_ap) == [3, 6, 9, 10]  # the resumed run re-evaluated nothing
    for part in ("model", "ema", "optimizer"):  # the resumed run ends where the uninterrupted one did
        _assert_same_tensors(final_part(final, part), final_part(straight, part), part)
    assert final.best.step == max(val_ap, key=val_ap.get)  # the first evaluation with the highest AP, across resume
    deployable = best_state(final)
    assert deployable.optimizer is None and set(deployable.model) == set(final.model)
    line = format_progress(10, 10, final.metrics, eta_s=75)
    assert line.startswith("step 10/10 (epoch 2.5)") and "AP50" in line and "img/s" in line and "ETA 1m15s" in line


def test_a_tiled_run_stopped_inside_an_epoch_resumes_with_the_same_windows(tiny_config, tmp_path, monkeypatch):
    """`data.tiling` with 96 px windows of the 128 px images: an epoch counts windows. A crash as epoch 2 starts
    resumes from the last checkpoint inside epoch 1 and trains the very windows (image, position), in the same
    order, and learning rates of the run that never stopped."""
    from pipeline.config.tiling import TilingSpec
    from pipeline.data.coco_index import load_split
    from pipeline.data.tiling import training_tiles

    tiling = {"size": 96, "overlap": 0.25}
    windows = len(training_tiles(load_split(tiny_config.data.dir, "train")[2], TilingSpec(**tiling)))
    steps_per_epoch = -(-windows // tiny_config.data.batch_size)  # the last batch padded
    assert windows > 16 * 2 and steps_per_epoch >= 4
    seen = _record_image_ids(monkeypatch)
    base = replace(  # into epoch 2, checkpointed halfway through epoch 1
        tiny_config,
        train={"epochs": None, "steps": steps_per_epoch + 1, "eval_every": f"{steps_per_epoch // 2 + 1} steps"},
        ray={"num_workers": 1},
        data={"tiling": tiling},
    )
    periods: list[tuple[int, float]] = []

    def record(trainer, metrics):
        periods.append((int(metrics["step"]), trainer.optimizer.param_groups[0]["lr"]))

    fit(base, tmp_path / "straight", on_period_end=record)
    straight_ids, straight_periods = list(seen), list(periods)
    assert len(set(straight_ids[:windows])) == windows  # every window once in epoch 1, each (image, position)

    seen.clear(), periods.clear()
    crashing = replace(base, train={"fault_marker": str(tmp_path / "fault"), "fault_epoch": 2})
    with pytest.raises(InjectedFault, match="epoch 2"):
        fit(crashing, tmp_path / "crash", on_period_end=record)
    checkpointed = periods[-1][0]
    before_crash = list(seen)
    seen.clear()
    fit(crashing, tmp_path / "crash", resume=True, on_period_end=record)
    assert 0 < checkpointed < steps_per_epoch
    batch = tiny_config.data.batch_size
    assert before_crash[: batch * checkpointed] + seen == straight_ids  # the same windows, the same order
    assert periods == straight_periods  # the same evaluation points and learning rates


def test_records_without_iscrowd_or_area_train_and_evaluate(tiny_config, tmp_path, monkeypatch):
    """Many annotation tools omit `iscrowd` and `area`; pycocotools' evaluator needs both. Validation says how many
    it fills, and training runs through its evaluations."""
    import json
    import shutil

    from pipeline.data import validate_dataset
    from pipeline.training import loop

    data = tmp_path / "exported"
    shutil.copytree(tiny_config.data.dir, data)
    for split in ("train", "val"):
        path = data / "annotations" / f"{split}.json"
        coco = json.loads(path.read_text())
        for ann in coco["annotations"]:
            ann.pop("iscrowd"), ann.pop("area")
        coco.pop("info", None), coco.pop("licenses", None)
        path.write_text(json.dumps(coco))
    report = validate_dataset(data)
    assert report.ok and report.filled["iscrowd"] == report.filled["area"] == sum(report.num_annotations.values())
    assert f"{report.filled['area']} annotation(s) without 'area' filled" in report.summary()
    postprocess_seen = []
    original = loop.evaluate

    def evaluate(*args, **kwargs):
        postprocess_seen.append(args[6])
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", evaluate)
    train = {"epochs": None, "steps": 2, "eval_every": "2 steps"}
    config = replace(tiny_config, data={"dir": str(data)}, train=train, ray={"num_workers": 1})
    final = fit(config, tmp_path / "ckpt")
    assert final.position["step"] == 2 and 0.0 <= final.metrics["val_AP50"] <= 1.0
    assert [p.soft_nms for p in postprocess_seen] == [True]  # validation scores soft-NMS detections by default


def test_with_gradient_accumulation_the_schedule_is_as_long_as_the_steps_the_loop_takes(tiny_config, tmp_path):
    """16 images, batch 4, one process: accumulating 3 makes 2 optimizer steps per epoch (the second's global batch
    filled with the epoch's first images: 6 batches), so 2 epochs are 4 steps, and the cosine schedule must end
    exactly there."""
    config = replace(
        tiny_config,
        train={"grad_accum_steps": 3, "epochs": 2, "eval_every": "2 epochs"},
        optim={"warmup_epochs": 0.0, "min_lr_ratio": 0.0},
        ray={"num_workers": 1},
    )
    lrs: list[float] = []
    final = fit(
        config, tmp_path / "ckpt", on_period_end=lambda trainer, _: lrs.append(trainer.scheduler.get_last_lr()[0])
    )
    assert final.position == {"step": 4, "epoch": 1, "batch": 6}  # all 6 batches of the 2nd epoch (0-based 1)
    assert final.scheduler["last_epoch"] == 4  # one scheduler step per optimizer step
    assert lrs == [pytest.approx(0.0, abs=1e-12)]  # the cosine reached its floor on the run's last step, not before


def final_part(state, part: str) -> dict:
    return {"model": state.model, "ema": state.ema, "optimizer": state.optimizer}[part]


def _assert_same_tensors(got, want, where: str) -> None:
    """Nested dicts/lists of tensors and numbers, equal to the bit."""
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for key in want:
            _assert_same_tensors(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_same_tensors(g, w, f"{where}[{i}]")
    elif isinstance(want, torch.Tensor):
        assert torch.equal(got, want), f"{where}: max difference {(got.float() - want.float()).abs().max():.3g}"
    else:
        assert got == want, (where, got, want)


def test_checkpoints_between_evaluations_resume_with_the_same_images(tiny_config, tmp_path, monkeypatch):
    """Evaluations at steps 6 and 10, a checkpoint every 3 steps between (3 and 9; at 6 the evaluation's own
    checkpoint is the only one): a crash as epoch 3 starts (step 8) resumes from step 6, mid-epoch, with no evaluation
    before step 10, on exactly the straight run's images."""
    from pipeline.training import loop

    seen = _record_image_ids(monkeypatch)
    saved: list[int] = []
    save = loop.save_checkpoint

    def recording_save(state, directory):
        saved.append(state.position["step"])
        return save(state, directory)

    monkeypatch.setattr(loop, "save_checkpoint", recording_save)
    base = replace(
        tiny_config,
        data={"augment": "none"},
        train={"epochs": None, "steps": 10, "eval_every": "6 steps", "checkpoint_every_steps": 3},
        ray={"num_workers": 1},
    )
    periods: list[int] = []
    fit(base, tmp_path / "straight", on_period_end=lambda trainer, metrics: periods.append(int(metrics["step"])))
    straight_ids = list(seen)
    assert saved == [3, 6, 9, 10] and periods == [6, 10]  # each step saved once

    seen.clear(), saved.clear(), periods.clear()
    crashing = replace(base, train={"fault_marker": str(tmp_path / "fault"), "fault_epoch": 3})
    with pytest.raises(InjectedFault, match="epoch 3"):
        fit(crashing, tmp_path / "crash")
    assert saved == [3, 6] and len(seen) == 32  # steps 1-8 loaded, the last checkpoint at step 6
    before_crash = list(seen)
    seen.clear()
    final = fit(crashing, tmp_path / "crash", resume=True, on_period_end=lambda t, m: periods.append(int(m["step"])))
    assert before_crash[:24] + seen == straight_ids  # steps 7-10: the same images in the same order
    assert periods == [10] and final.position == {"step": 10, "epoch": 2, "batch": 2}
