"""Ray Jobs through the CLI against a real `ray start --head` on 127.0.0.1 with token authentication: a training
job's life cycle (submit, logs --follow, status, logs, list) ending in SUCCEEDED with its MLflow run, `submit stop`,
and the errors a user sees for a missing, rejected or unreadable token and an unreachable address."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from pipeline import jobs
from pipeline.config import load_config, save_config

from .conftest import ROOT, free_port, tiny_overrides

pytestmark = pytest.mark.slow


def cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "run_pipeline.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for_status(address: str, job_id: str, wanted: set[str], timeout_s: float = 120) -> str:
    deadline = time.time() + timeout_s
    while True:
        status = jobs.status(address, job_id)["status"]
        if status in wanted or time.time() > deadline:
            return status
        time.sleep(1)


@pytest.fixture
def tiny_config_file(tiny_dataset, tmp_path):
    """The tiny run as a YAML file, outputs and an absolute SQLite store under tmp_path (the single-node head)."""
    db = tmp_path / "mlflow.db"
    config = load_config(None, tiny_overrides(tiny_dataset, tmp_path, f"sqlite:///{db}"))
    return save_config(config, tmp_path / "tiny.yaml"), f"sqlite:///{db}"


def test_submitted_training_job_succeeds_and_its_mlflow_run_exists(ray_head, client_env, tiny_config_file):
    config_file, tracking_uri = tiny_config_file
    job_id = f"effdet-test-{time.time_ns()}"
    address = ["--address", ray_head.address]

    submitted = cli(
        "submit",
        *address,
        "--no-install",
        "--job-id",
        job_id,
        "--",
        "train",
        "--config",
        str(config_file),
        env=client_env,
    )
    assert submitted.returncode == 0, submitted.stderr
    assert f"submitted {job_id}" in submitted.stdout

    followed = cli("submit", "logs", job_id, "--follow", *address, env=client_env)
    assert followed.returncode == 0, followed.stdout[-3000:] + followed.stderr
    assert "epoch 2/2" in followed.stdout and f"job {job_id} SUCCEEDED" in followed.stdout

    status = cli("submit", "status", job_id, *address, env=client_env)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    assert "run_pipeline.py train --config" in status.stdout
    logs = cli("submit", "logs", job_id, *address, env=client_env)
    assert "done in" in logs.stdout and "MLflow run" in logs.stdout
    listed = cli("submit", "list", *address, env=client_env)
    assert job_id in listed.stdout

    # the job's MLflow run, in the store the config named (absolute: the job ran in Ray's own working dir)
    client = MlflowClient(tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["train.epochs"] == "2"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_AP50")) == [1, 2]
    assert run.info.run_id in logs.stdout


def test_stop_ends_a_running_job(ray_head, client_env, tiny_config_file):
    config_file, _ = tiny_config_file
    job_id = f"effdet-stop-{time.time_ns()}"
    long_run = ["--", "train", "--config", str(config_file), "--set", "train.epochs=50"]
    submitted = cli(
        "submit", "--address", ray_head.address, "--no-install", "--job-id", job_id, *long_run, env=client_env
    )
    assert submitted.returncode == 0, submitted.stderr
    assert wait_for_status(ray_head.address, job_id, {"RUNNING", "FAILED", "SUCCEEDED"}) == "RUNNING"

    stopped = cli("submit", "stop", job_id, "--address", ray_head.address, env=client_env)
    assert stopped.returncode == 0 and f"stop requested for {job_id}" in stopped.stdout
    assert wait_for_status(ray_head.address, job_id, {"STOPPED", "FAILED", "SUCCEEDED"}, 60) == "STOPPED"
    again = cli("submit", "stop", job_id, "--address", ray_head.address, env=client_env)
    assert "had already ended: STOPPED" in again.stdout


def test_token_errors_say_what_to_do(ray_head, client_env, monkeypatch, tmp_path):
    assert jobs.list_jobs(ray_head.address) is not None  # the right token from RAY_AUTH_TOKEN

    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    with pytest.raises(jobs.JobsError, match=r"rejected the token from RAY_AUTH_TOKEN \(HTTP 403\)"):
        jobs.connect(ray_head.address)

    monkeypatch.delenv("RAY_AUTH_TOKEN")  # and HOME has no ~/.ray/auth_token
    with pytest.raises(jobs.JobsError, match="requires a token .* none was found: set RAY_AUTH_TOKEN"):
        jobs.connect(ray_head.address)
    missing = cli("submit", "list", "--address", ray_head.address, env={**client_env, "RAY_AUTH_TOKEN": ""})
    assert missing.returncode == 1 and "requires a token" in missing.stderr and "Traceback" not in missing.stderr

    token_file = tmp_path / "token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    with pytest.raises(jobs.JobsError, match="RAY_AUTH_TOKEN_PATH=.*cannot read the token file"):
        jobs.connect(ray_head.address)
    token_file.write_text(ray_head.token + "\n")
    assert jobs.list_jobs(ray_head.address) is not None

    home_token = tmp_path / "home" / ".ray" / "auth_token"  # Ray's default place, as `ray get-auth-token` writes it
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    home_token.parent.mkdir(parents=True)
    home_token.write_text(ray_head.token)
    assert jobs.list_jobs(ray_head.address) is not None

    with pytest.raises(jobs.JobsError, match="no job 'no-such-job' on this cluster"):
        jobs.status(ray_head.address, "no-such-job")


def test_unreachable_address_is_a_clear_error(client_env):
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = cli("submit", "status", "some-job", "--address", nowhere, env=client_env, timeout=60)
    assert result.returncode == 1
    assert f"cannot reach the Ray dashboard at {nowhere}" in result.stderr and "Traceback" not in result.stderr
