"""SIGTERM (what `submit stop`, `kill` and Kubernetes send) ends a training job like Ctrl+C: its MLflow run is
closed as KILLED, not left RUNNING, and the job can be resumed."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from child_process import ProcessOutput

from pipeline.config import replace, save_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_sigterm_closes_the_mlflow_run_as_killed(tiny_config, tmp_path):
    from mlflow.tracking import MlflowClient

    config = replace(tiny_config, train={"epochs": 30}, ray={"num_workers": 1})  # far longer than the test waits
    path = save_config(config, tmp_path / "job.yaml")
    with open(tmp_path / "job.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "run_pipeline.py", "train", "--config", str(path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        out = ProcessOutput(proc, log)
        try:
            out.wait_for("(epoch 1)", timeout=600)  # the first evaluation's progress line: training is under way
            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        output = out.close()
    assert returncode == 130, output[-3000:]
    assert "interrupted: the MLflow run is marked KILLED" in output
    client = MlflowClient(config.mlflow.tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name(config.mlflow.experiment).experiment_id])
    assert run.info.status == "KILLED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert steps[0] == 4  # 16 images, 1 worker x 4: 4 optimizer steps per epoch
