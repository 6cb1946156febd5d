"""Rank 0's poll of a graceful stop and of Ray Train's preemption notices (`WorkerInterrupts`), which reports each
notice once."""

from __future__ import annotations

from types import SimpleNamespace

from pipeline.cluster import interrupts as ray_interrupts


def test_each_preemption_notice_is_reported_once(monkeypatch):
    """Ray keeps a notice once given and merges later ones into it (more ranks, the earliest deadline): each change
    is a new notice, worth a checkpoint; the same one is not."""
    notice = [None]
    monkeypatch.setattr(ray_interrupts, "_preemption_notice", lambda: notice[0])
    poll = ray_interrupts.WorkerInterrupts()
    assert poll() is None
    notice[0] = SimpleNamespace(preempted_ranks=[1], deadline_ms=5_000)
    assert [poll(), poll(), poll()] == ["preemption", None, None]  # one checkpoint per notice
    notice[0] = SimpleNamespace(preempted_ranks=[0, 1], deadline_ms=5_000)  # another node's, merged in
    assert [poll(), poll()] == ["preemption", None]
    notice[0] = SimpleNamespace(preempted_ranks=[0, 1], deadline_ms=3_000)  # an earlier deadline
    assert poll() == "preemption"
