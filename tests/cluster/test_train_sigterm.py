"""SIGTERM (what `submit stop`, `kill` and Kubernetes send) stops a training job gracefully: the workers checkpoint at
the next optimizer step, the MLflow run is closed as KILLED (not left RUNNING), and `--resume` goes on from that
step to the end, its step metrics neither repeated nor missing."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from child_process import ProcessOutput

from pipeline.config import replace, save_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_sigterm_inside_an_epoch_checkpoints_that_step_and_resume_finishes_the_run(tiny_config, tmp_path):
    from mlflow.tracking import MlflowClient

    from pipeline.cluster import train as ray_train

    config = replace(  # 2 DDP workers x 4 images: 2 steps per epoch, 24 in all, evaluated every 6 epochs
        tiny_config,
        train={"epochs": 12, "eval_every": 6, "log_every_seconds": 0.001},  # a progress line after every step
    )
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
            out.wait_for("step 5/24 (epoch 2.5)", timeout=600)  # inside epoch 3
            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        output = out.close()
    assert returncode == 130, output[-3000:]
    assert "SIGTERM: checkpointing at the next step" in output
    [stopped] = [int(s) for s in re.findall(r"stopped at step (\d+) after saving its checkpoint", output)]
    assert 5 < stopped < 24, output[-3000:]  # the next step boundary (usually 6 or 7), both ranks agreeing
    assert "the MLflow run is marked KILLED; continue from the last checkpoint with --resume" in output
    client = MlflowClient(config.mlflow.tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name(config.mlflow.experiment).experiment_id])
    assert run.info.status == "KILLED"

    outcome = ray_train.train(config, resume=True)
    assert outcome.run.run_id == run.info.run_id
    assert outcome.last_metrics["resumed_from_step"] == stopped and outcome.last_metrics["step"] == 24
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    history = {
        key: [m.step for m in client.get_metric_history(run.info.run_id, key)] for key in ("train_loss", "step_lr")
    }
    assert sorted(history["train_loss"]) == [12, 24]  # each evaluation once, across the stop
    assert sorted(history["step_lr"]) == list(range(1, 25))  # every step's line logged once: none lost, none twice
