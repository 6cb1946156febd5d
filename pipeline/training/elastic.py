"""The worker counts a run has trained with: resizes of an elastic run and the time it spent below its largest size.

Ray Train's elastic controller changes the worker group by restarting it from the latest checkpoint at the new
size; the checkpoint carries this record (`WorldHistory.as_dict`), so the restarted rank 0 sees where the size
changed, says so once, and the run's summary counts the resizes. Nothing here imports Ray.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.data.samplers import StepLayout


@dataclass
class WorldHistory:
    """Worker counts over a run: the current one, every change (step, from, to, why) and the training seconds spent
    with fewer than `max_world` workers (summed over attempts, between checkpoints)."""

    max_world: int
    world: int
    resizes: list[dict[str, Any]] = field(default_factory=list)
    reduced_s: float = 0.0
    resized_now: bool = False  # this attempt began at another size than the checkpoint's
    _mark: float = field(default_factory=time.perf_counter, repr=False)

    def tick(self) -> None:
        """Count the time since the last tick (or the start of this attempt) when below the largest size."""
        now = time.perf_counter()
        if self.world < self.max_world:
            self.reduced_s += now - self._mark
        self._mark = now

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> WorldHistory:
        return cls(int(saved["max_world"]), int(saved["world"]), list(saved["resizes"]), float(saved["reduced_s"]))

    def as_dict(self) -> dict[str, Any]:
        return {"max_world": self.max_world, "world": self.world, "resizes": self.resizes, "reduced_s": self.reduced_s}

    def summary(self) -> str:
        changes = "; ".join(f"step {r['step']}: {r['from']} -> {r['to']} ({r['why']})" for r in self.resizes)
        return (
            f"elastic: {len(self.resizes)} resize(s){f' ({changes})' if changes else ''}, "
            f"{self.reduced_s:.0f} s of training with fewer than {self.max_world} workers"
        )


def resume_world(saved: dict[str, Any] | None, world: int, max_world: int, step: int) -> WorldHistory:
    """This attempt's history: the checkpoint's, with a resize recorded at `step` when its world was another."""
    if not saved:
        return WorldHistory(max_world, world)
    history = WorldHistory.from_dict({**saved, "max_world": max_world, "world": world})
    previous = int(saved["world"])
    if previous != world:
        why = "a worker or its node was lost" if world < previous else "resources for more workers appeared"
        history.resizes.append({"step": step, "from": previous, "to": world, "why": why})
        history.resized_now = True
    return history


def accumulation(layout: StepLayout) -> str:
    """Micro-batches per worker at this world size: `2`, or `2/1` where the first ranks take one more."""
    most = -(-layout.chunks // layout.world_size)
    return f"{most}/{layout.chunks // layout.world_size}" if layout.chunks % layout.world_size else str(most)


def resize_line(history: WorldHistory, layout: StepLayout) -> str | None:
    """The line rank 0 prints after a restart that changed the worker count (None when it did not)."""
    if not history.resized_now:
        return None
    last = history.resizes[-1]
    return (
        f"elastic: resized from {last['from']} to {last['to']} workers at step {last['step']} ({last['why']}); "
        f"each worker now accumulates {accumulation(layout)} micro-batches of {layout.batch_size} "
        f"(global batch {layout.global_batch}, unchanged)"
    )
