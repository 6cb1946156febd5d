"""The training run's progress lines: one per evaluation period (with AP and ETA) and rank 0's in-period line."""

from __future__ import annotations


def format_progress(step: int, total: int, metrics: dict[str, float], eta_s: float | None) -> str:
    """`step 120/480 (epoch 3)  loss 0.812 (cls 0.51 box 0.0061)  AP 0.231 AP50 0.512  41.2 img/s (data wait 3%)
    lr 1.2e-01  ETA 2m10s`."""
    parts = [
        f"step {step}/{total} (epoch {metrics.get('epoch', 0):.3g})",
        f"loss {metrics.get('train_loss', float('nan')):.4f}"
        f" (cls {metrics.get('train_class_loss', float('nan')):.4f}"
        f" box {metrics.get('train_box_loss', float('nan')):.5f})",
    ]
    if "val_AP" in metrics:
        parts.append(f"AP {metrics['val_AP']:.3f} AP50 {metrics.get('val_AP50', float('nan')):.3f}")
    parts.append(f"{metrics.get('images_per_s', 0.0):.1f} img/s (data wait {metrics.get('data_wait_share', 0.0):.0%})")
    if "gpu_memory_peak_gb" in metrics:
        parts.append(f"GPU mem {metrics['gpu_memory_peak_gb']:.1f} GB")
    parts.append(f"lr {metrics.get('lr', 0.0):.2e}")
    if eta_s is not None:
        parts.append(f"ETA {int(eta_s // 60)}m{int(eta_s % 60):02d}s")
    return "  ".join(parts)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def format_step_progress(snapshot: dict[str, float], schedule) -> str:
    """`step 57/320 (epoch 1.43)  loss 0.9512  12.1 img/s (data wait 2%)  lr 2.10e-01  ETA epoch 0m40s, run 4m10s`:
    rank 0's view inside a period (img/s counts every rank)."""
    step, per_epoch = int(snapshot["step"]), schedule.steps_per_epoch
    left_in_epoch = (per_epoch - step % per_epoch) % per_epoch
    pace = snapshot["seconds_per_step"]
    return "  ".join(
        [
            f"step {step}/{schedule.total_steps} (epoch {step / per_epoch:.3g})",
            f"loss {snapshot['train_loss']:.4f}",
            f"{snapshot['images_per_s']:.1f} img/s (data wait {snapshot['data_wait_share']:.0%})",
            f"lr {snapshot['lr']:.2e}",
            f"ETA epoch {_minutes(left_in_epoch * pace)}, run {_minutes((schedule.total_steps - step) * pace)}",
        ]
    )
