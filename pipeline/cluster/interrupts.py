"""Interruptions a long run survives: a graceful stop the driver is asked for (SIGTERM from `submit stop`, `kill`, a
Kubernetes eviction) and Ray Train's preemption notice (a node of the run is draining: a spot reclaim).

Both end in a checkpoint at the next optimizer-step boundary (`pipeline.training.cadence.after_step` makes every
rank agree on which step). After a stop the workers return and the driver marks the MLflow run KILLED, to be
continued with `--resume`; after a preemption notice they keep training until Ray Train restarts them on other
nodes from that checkpoint, counted against `ray.max_preemptions` (FailureConfig.max_preemption_failures), not
against `ray.max_failures`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)


class StopFlag:
    """A Ray actor (no CPU) the driver sets once; rank 0 holds a `wait()` reference and checks it without blocking."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    async def request(self) -> None:
        self._event.set()

    async def wait(self) -> bool:
        await self._event.wait()
        return True


def start_stop_flag():
    """The flag on the driver's node: it lives as long as the driver, whatever happens to worker nodes."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0, scheduling_strategy=here)(StopFlag).remote()


@contextlib.contextmanager
def stop_on_sigterm(flag) -> Iterator[threading.Event]:
    """While training: the first SIGTERM asks the workers to checkpoint and stop (the returned event is set); a
    second one interrupts at once (KeyboardInterrupt, as before). Main thread only; elsewhere a no-op."""
    requested, done = threading.Event(), threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def forward() -> None:  # the Ray call, outside the handler: the main thread may be inside a Ray call
        while not requested.wait(timeout=1.0):
            if done.is_set():
                return
        flag.request.remote()

    def handle(signum: int, frame: Any) -> None:  # only flags and a raw write: nothing that takes a lock
        if requested.is_set():
            raise KeyboardInterrupt(f"signal {signum} (second)")
        requested.set()
        os.write(2, b"\nSIGTERM: checkpointing at the next step, then stopping (again to stop at once)\n")

    forwarder = threading.Thread(target=forward, name="sigterm-to-stop-flag", daemon=True)
    forwarder.start()
    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGTERM, previous)
        done.set()


class WorkerInterrupts:
    """Rank 0's poll after each step (`pipeline.training.cadence.Interrupts`): "stop" once the driver set its
    `StopFlag`, "preemption" once per notice of Ray Train's, else None. Cheap: no remote call per step."""

    def __init__(self, stop_flag=None) -> None:
        self._stop = stop_flag.wait.remote() if stop_flag is not None else None
        self._notice_seen: tuple | None = None

    def __call__(self) -> str | None:
        import ray

        if self._stop is not None and ray.wait([self._stop], timeout=0)[0]:
            try:
                ray.get(self._stop)
                return "stop"
            except ray.exceptions.RayError:  # the flag is gone (its driver with it): not a request
                self._stop = None
        notice = _preemption_notice()
        # Ray only merges notices (another node: more ranks, maybe an earlier deadline): a new one checkpoints again
        key = None if notice is None else (tuple(notice.preempted_ranks), notice.deadline_ms)
        if key is None or key == self._notice_seen:
            return None
        self._notice_seen = key
        logger.warning("preemption notice for ranks %s: checkpointing now", list(notice.preempted_ranks))
        return "preemption"


def _preemption_notice():
    """This worker's copy of Ray Train's preemption notice: what `ray.train.get_preemption_info()` returns, read
    without that call's Ray collective per step (`after_step` broadcasts rank 0's answer with our own scalar)."""
    try:
        from ray.train.v2._internal.execution.context import get_train_context

        return get_train_context().preemption_context.preemption_info
    except (ImportError, AttributeError, RuntimeError):  # another Ray layout, or not in a Ray Train worker
        return None
