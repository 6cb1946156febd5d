"""What `submit --follow` and `submit status` print for a job that ended badly, from what Ray records: its
reason and the log's last lines, or, when the runtime env failed before the job logged anything, the end of
Ray's message (where only Ray keeps the installer's error). Ray's client is replaced by a recording of its
answers; the real head is exercised in test_cluster_jobs.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipeline.cli import main
from pipeline.cluster import submission

SETUP_FAILED = "\n".join(
    [
        "runtime_env setup failed: Failed to set up runtime environment.",
        "Traceback (most recent call last):",
        *[f'  File "uv.py", line {n}, in _run' for n in range(40)],
        "RuntimeError: Failed to execute: python -m uv pip install -r requirements.txt",
        "  x No solution found when resolving dependencies: torch==9.9.9 was not found",
    ]
)


class RecordedClient:
    def __init__(self, status: str, message: str, log: str):
        self.info = SimpleNamespace(
            status=status, message=message, entrypoint="python run_pipeline.py train", start_time=0, end_time=0
        )
        self.log = log

    def get_job_info(self, job_id):
        return self.info

    def get_job_logs(self, job_id):
        return self.log


@pytest.fixture
def recorded(monkeypatch):
    def use(status: str, message: str, log: str = "") -> None:
        monkeypatch.setattr(submission, "connect", lambda address: RecordedClient(status, message, log))

    return use


def test_a_runtime_env_failure_shows_the_installers_error_from_rays_message(recorded):
    recorded("FAILED", SETUP_FAILED)
    lines = submission.failure_report("http://127.0.0.1:1", "job-1")
    assert lines[0] == "reason: runtime_env setup failed: Failed to set up runtime environment."
    assert lines[-1].strip().endswith("torch==9.9.9 was not found")
    assert len(lines) == 1 + submission.FAILURE_TAIL_LINES  # the end of the message, not all of it


def test_an_entrypoint_failure_shows_the_last_log_lines_once(recorded):
    log = "".join(f"line {n}\n" for n in range(100)) + "error: python cannot import (missing: torch)\n"
    recorded("FAILED", "Job entrypoint command failed with exit code 2, last available logs:\n" + log, log)
    lines = submission.failure_report("http://127.0.0.1:1", "job-2")
    assert lines[0] == "reason: Job entrypoint command failed with exit code 2, last available logs:"
    assert lines[1] == "last 30 lines of the job's log:"
    assert lines[-1] == "  error: python cannot import (missing: torch)"
    assert len(lines) == 2 + 30
    # after --follow streamed the log, only the reason is added
    assert submission.failure_report("http://127.0.0.1:1", "job-2", include_log=False) == [lines[0]]


def test_submit_status_prints_the_first_line_of_rays_message_and_the_report(recorded, capsys):
    recorded("FAILED", SETUP_FAILED)
    assert main(["submit", "status", "job-3", "--address", "http://127.0.0.1:1"]) == 0
    out = capsys.readouterr().out
    assert "message:     runtime_env setup failed: Failed to set up runtime environment.\n" in out
    assert "reason: runtime_env setup failed" in out and "torch==9.9.9 was not found" in out
    assert out.count('File "uv.py"') < 30  # the message's 40-line traceback is cut to its end
