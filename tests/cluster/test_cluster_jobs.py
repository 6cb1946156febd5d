"""Ray Jobs through the CLI against a real `ray start --head` on 127.0.0.1 with token authentication: a training
job's life cycle (submit with the default per-job install, logs --follow, status, logs, list) ending in SUCCEEDED
with its MLflow run, `submit stop`, a job whose interpreter lacks the dependencies failing with the reason printed,
and the errors a user sees for a missing, rejected or unreadable token and an unreachable address."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient
from ports import free_port
from tiny_run import tiny_overrides

from pipeline.cli import main
from pipeline.cluster import submission
from pipeline.config import load_config, save_config

from .conftest import ROOT

pytestmark = pytest.mark.slow


def run_pipeline(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python run_pipeline.py ARGS` as a user runs it."""
    return subprocess.run(
        [sys.executable, "run_pipeline.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The same command line in this process (no interpreter start-up): exit code, stdout, stderr."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def wait_for_log_line(address: str, job_id: str, needle: str, timeout_s: float = 600) -> None:
    """Until the job's log holds `needle`, read from Ray's log stream as it is written (an event, not a poll)."""
    client = submission.connect(address)

    async def tail() -> None:
        seen = ""
        async for chunk in client.tail_job_logs(job_id):
            seen += chunk
            if needle in seen:
                return
        raise AssertionError(f"job {job_id} ended without logging {needle!r}:\n{seen[-3000:]}")

    asyncio.run(asyncio.wait_for(tail(), timeout_s))


def status_once_ended(address: str, job_id: str, timeout_s: float = 300) -> str:
    """The job's status once its log stream closes, which Ray does when the job ends."""
    client = submission.connect(address)

    async def drain() -> None:
        async for _ in client.tail_job_logs(job_id):
            pass

    asyncio.run(asyncio.wait_for(drain(), timeout_s))
    return submission.status(address, job_id)["status"]


@pytest.fixture
def tiny_config_file(tiny_dataset, tmp_path):
    """The tiny run as a YAML file, outputs and an absolute SQLite store under tmp_path (the single-node head)."""
    db = tmp_path / "mlflow.db"
    config = load_config(None, tiny_overrides(tiny_dataset, tmp_path, f"sqlite:///{db}"))
    return save_config(config, tmp_path / "tiny.yaml"), f"sqlite:///{db}"


def test_submitted_training_job_succeeds_and_its_mlflow_run_exists(ray_head, client_env, tiny_config_file, capsys):
    config_file, tracking_uri = tiny_config_file
    job_id = f"effdet-test-{time.time_ns()}"
    address = ["--address", ray_head.address]
    job = ["--", "train", "--config", str(config_file), "--set", "train.epochs=1"]

    # the default install path (Ray's uv runtime env) on a head started from the venv without activating it
    submitted = run_pipeline("submit", *address, "--job-id", job_id, *job, env=client_env)
    assert submitted.returncode == 0, submitted.stderr
    assert f"submitted {job_id}" in submitted.stdout

    code, followed, err = cli(capsys, "submit", "logs", job_id, "--follow", *address)
    assert code == 0, followed[-3000:] + err
    assert "step 2/2 (epoch 1)" in followed and f"job {job_id} SUCCEEDED" in followed

    code, status, _ = cli(capsys, "submit", "status", job_id, *address)
    assert code == 0 and "SUCCEEDED" in status and "run_pipeline.py train --config" in status
    _, logs, _ = cli(capsys, "submit", "logs", job_id, *address)
    assert "done in" in logs and "MLflow run" in logs
    _, listed, _ = cli(capsys, "submit", "list", *address)
    assert job_id in listed

    # the job's MLflow run, in the store the config named (absolute: the job ran in Ray's own working dir)
    client = MlflowClient(tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["train.epochs"] == "1"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_AP50")] == [2]  # 2 steps per epoch
    assert run.info.run_id in logs


def test_stop_ends_a_running_job_and_its_mlflow_run_is_closed(ray_head, client_env, tiny_config_file, capsys):
    config_file, tracking_uri = tiny_config_file  # a tmp_path of its own: this store holds only this job's run
    job_id = f"effdet-stop-{time.time_ns()}"
    address = ["--address", ray_head.address]
    long_run = ["--", "train", "--config", str(config_file), "--set", "train.epochs=50"]
    code, _, err = cli(capsys, "submit", *address, "--job-id", job_id, *long_run)
    assert code == 0, err
    wait_for_log_line(ray_head.address, job_id, "(epoch 1)")  # stopped mid-training, not during start-up
    client = MlflowClient(tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")][:1] == [2]  # epoch 1 logged

    code, stopped, _ = cli(capsys, "submit", "stop", job_id, *address)
    assert code == 0 and f"stop requested for {job_id}" in stopped
    assert status_once_ended(ray_head.address, job_id) == "STOPPED"
    _, again, _ = cli(capsys, "submit", "stop", job_id, *address)
    assert "had already ended: STOPPED" in again
    # SIGTERM reached the job as an interruption (within RAY_JOB_STOP_WAIT_TIME_S): its run is closed, not RUNNING
    assert client.get_run(run.info.run_id).info.status == "KILLED"


def test_a_job_whose_python_lacks_the_dependencies_fails_saying_which(ray_head, client_env, tiny_config_file, capsys):
    config_file, _ = tiny_config_file
    job_id = f"effdet-bare-{time.time_ns()}"
    address = ["--address", ray_head.address]
    job = ["--", "train", "--config", str(config_file)]
    # --no-install: the job runs the head's `python` on PATH, a bare interpreter (see the ray_head fixture)
    code, followed, _ = cli(capsys, "submit", *address, "--no-install", "--follow", "--job-id", job_id, *job)
    assert code == 1 and f"job {job_id} FAILED" in followed, followed[-3000:]
    report = followed.split(f"job {job_id} FAILED", 1)[1]
    assert "reason: Job entrypoint command failed with exit code 2" in report, report
    assert "cannot import the project's dependencies (missing: torch," in followed
    code, status, _ = cli(capsys, "submit", "status", job_id, *address)
    assert code == 0 and "FAILED" in status and "missing: torch," in status and "submit without --no-install" in status


def test_token_errors_say_what_to_do(ray_head, client_env, monkeypatch, tmp_path, capsys):
    assert submission.list_jobs(ray_head.address) is not None  # the right token from RAY_AUTH_TOKEN

    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    with pytest.raises(submission.JobsError, match=r"rejected the token from RAY_AUTH_TOKEN \(HTTP 403\)"):
        submission.connect(ray_head.address)

    monkeypatch.delenv("RAY_AUTH_TOKEN")  # and HOME has no ~/.ray/auth_token
    with pytest.raises(submission.JobsError, match="requires a token .* none was found: set RAY_AUTH_TOKEN"):
        submission.connect(ray_head.address)
    code, _, err = cli(capsys, "submit", "list", "--address", ray_head.address)
    assert code == 1 and err.startswith("error: the cluster at") and "requires a token" in err

    token_file = tmp_path / "token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    with pytest.raises(submission.JobsError, match="RAY_AUTH_TOKEN_PATH=.*cannot read the token file"):
        submission.connect(ray_head.address)
    token_file.write_text(ray_head.token + "\n")
    assert submission.list_jobs(ray_head.address) is not None

    home_token = tmp_path / "home" / ".ray" / "auth_token"  # Ray's default place, as `ray get-auth-token` writes it
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    home_token.parent.mkdir(parents=True)
    home_token.write_text(ray_head.token)
    assert submission.list_jobs(ray_head.address) is not None

    with pytest.raises(submission.JobsError, match="no job 'no-such-job' on this cluster"):
        submission.status(ray_head.address, "no-such-job")


def test_unreachable_address_is_a_clear_error(client_env, capsys):
    nowhere = f"http://127.0.0.1:{free_port()}"
    code, _, err = cli(capsys, "submit", "status", "some-job", "--address", nowhere)
    assert code == 1 and err.startswith(f"error: cannot reach the Ray dashboard at {nowhere}")
