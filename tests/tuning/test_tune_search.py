"""A real search through the CLI, as a user runs it: 2 tiny trials with ASHA on CPU, stopped with SIGTERM (what
`submit stop` and Kubernetes send; the CLI hands it to Tune's Ctrl+C handling) once the second trial has started,
and resumed. One search (about 2 minutes on 2 cores) serves every test in this module.

The trials differ only in learning rate: 0.64 (per 64 images) learns visibly in one epoch of 12 steps on this data
(val AP about 0.008 after epoch 1), 1e-6 does not (about 4e-5), so ASHA's choice is deterministic, not noise.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from tune_commands import tune_command

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

SEARCH = "lr-search"
MODEL_NAME = "shapes-tune"


def search_command(root: Path, *extra: str) -> list[str]:
    options = [
        "--num-samples",
        "1",
        "--max-epochs",
        "2",
        "--workers-per-trial",
        "1",
        "--max-concurrent-trials",
        "1",  # trials in grid order: the strong one sets the bar the others are cut against
        "--grace-period",
        "1",
        "--reduction-factor",
        "3",
        "--name",
        SEARCH,
        "--register",
        MODEL_NAME,
        "--no-onnx",  # the serving graph's export is tested in tests/registry
        *extra,
    ]
    sets = ["data.batch_size=8", "optim.warmup_epochs=0", "mlflow.experiment=tune-tests"]
    return tune_command(root, root / "lr.yaml", options, sets)


def _wait_for_second_trial(proc: subprocess.Popen, runs: Path, timeout: float = 300) -> None:
    """Until the first trial's last epoch checkpoint exists and Tune has started the second trial (its trial
    folder, written when Tune starts it: its Train run comes some 10 s later, not needed to stop it)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        first_done = any(runs.glob("*_00000/step_0000024"))  # epoch 2 of 12 steps (96 images, batch 8)
        if first_done and any(runs.parent.glob("run_trial_*_00001_*")):
            return
        time.sleep(0.5)
    raise AssertionError(f"the second trial never started (search exit code {proc.poll()})")


def _snapshot(directory: Path) -> dict[str, float]:
    return {str(p.relative_to(directory)): p.stat().st_mtime for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def search(tmp_path_factory) -> SimpleNamespace:
    from pipeline.data import write_synthetic_dataset

    root = tmp_path_factory.mktemp("search")
    write_synthetic_dataset(root / "data", num_images=120, size=128, val_fraction=0.2)
    (root / "lr.yaml").write_text("space:\n  optim.lr: {grid: [0.64, 1.0e-6]}\n", encoding="utf-8")
    runs = root / "ray" / SEARCH / "train_runs"
    with open(root / "first.log", "w") as log:
        proc = subprocess.Popen(search_command(root), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for_second_trial(proc, runs)
            proc.send_signal(signal.SIGTERM)
            first_rc = proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
    first_trial = next(runs.glob("*_00000"))
    before = _snapshot(first_trial)
    second = subprocess.run(
        search_command(root, "--resume"), cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    return SimpleNamespace(
        root=root,
        first_rc=first_rc,
        first_log=(root / "first.log").read_text(),
        second=second,
        first_trial=first_trial,
        before=before,
        report=root / "outputs" / "searches" / SEARCH / "report",
        uri=f"sqlite:///{root / 'mlflow.db'}",
    )


def _leaderboard(search) -> dict[str, dict]:
    assert search.second.returncode == 0, search.second.stdout[-3000:] + search.second.stderr[-3000:]
    rows = json.loads((search.report / "leaderboard.json").read_text())
    return {row["trial_id"].rsplit("_", 1)[1]: row for row in rows}  # "00000" -> its row


def test_interrupted_search_resumes_without_rerunning_the_finished_trial(search):
    assert search.first_rc == 130, search.first_log[-3000:]
    assert "search interrupted" in search.first_log
    rows = _leaderboard(search)
    assert sorted(rows) == ["00000", "00001"]  # the same two trials, none added or repeated
    assert "resuming search" in search.second.stdout
    assert _snapshot(search.first_trial) == search.before  # its Train run was not touched again
    from mlflow.tracking import MlflowClient

    client = MlflowClient(search.uri)
    child = client.get_run(json.loads(_child_record(search, rows["00000"]["trial_id"]).read_text())["run_id"])
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_AP")]
    assert steps == [12, 24]  # each epoch logged once (MLflow step = optimizer step: 12 per epoch)


def _child_record(search, trial_id: str) -> Path:
    return search.root / "outputs" / "searches" / SEARCH / "trials" / f"{trial_id}.json"


def test_asha_stops_the_weak_trials_after_the_grace_period(search):
    rows = _leaderboard(search)
    assert (rows["00000"]["status"], rows["00000"]["epochs"]) == ("finished", 2)
    stopped = [key for key, row in rows.items() if row["status"] == "stopped early"]
    assert stopped, rows
    assert all(rows[key]["epochs"] == 1 for key in stopped)
    assert rows["00000"]["val_AP"] > max(rows[key]["val_AP"] for key in stopped)


def test_every_trial_reports_its_measured_cost(search):
    for row in _leaderboard(search).values():
        assert 0 < row["params_m"] < 10 and 0 < row["gflops"] < 1 and row["latency_ms"] > 0


def test_mlflow_holds_the_search_and_one_child_run_per_trial(search):
    from mlflow.tracking import MlflowClient

    rows = _leaderboard(search)
    client = MlflowClient(search.uri)
    experiment = client.get_experiment_by_name("tune-tests")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("pipeline.job") == "tune"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_AP"] == pytest.approx(rows["00000"]["val_AP"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "leaderboard")}
    assert {"leaderboard/leaderboard.csv", "leaderboard/pareto.png", "leaderboard/leaderboard.json"} <= artifacts
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["tune.trial_id"] for r in children) == sorted(row["trial_id"] for row in rows.values())
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["tune.status"] in ("finished", "stopped early")
        assert "optim.lr" in child.data.params and "best_val_AP" in child.data.metrics


def _dominated(row: dict, others: list[dict], cost: str) -> bool:
    """Another trial is at least as accurate and at most as costly, and strictly better in one of the two."""
    return any(
        o["val_AP"] >= row["val_AP"] and o[cost] <= row[cost] and (o["val_AP"] > row["val_AP"] or o[cost] < row[cost])
        for o in others
        if o is not row
    )


def test_the_pareto_files_mark_the_fronts(search, check_plot):
    """Each trial's front marks equal a brute-force dominance check over the measured (val AP, cost) pairs."""
    rows = list(_leaderboard(search).values())
    for cost in ("gflops", "latency_ms"):
        marked = {row["trial_id"] for row in rows if cost in row["fronts"]}
        scored = [row for row in rows if math.isfinite(row["val_AP"]) and math.isfinite(row[cost])]
        expected = {row["trial_id"] for row in scored if not _dominated(row, scored, cost)}
        assert marked == expected, (cost, [(r["trial_id"], r["val_AP"], r[cost], r["fronts"]) for r in rows])
    check_plot(search.report / "pareto.png")
    assert "pareto: F = on the val mAP / GFLOPs front" in search.second.stdout


def test_the_best_trial_is_registered_as_champion(search):
    from mlflow.tracking import MlflowClient

    rows = _leaderboard(search)
    assert f"registered models:/{MODEL_NAME}/1 (aliases: champion)" in search.second.stdout
    version = MlflowClient(search.uri, registry_uri=search.uri).get_model_version_by_alias(MODEL_NAME, "champion")
    best_child = json.loads(_child_record(search, rows["00000"]["trial_id"]).read_text())["run_id"]
    assert version.tags["run_id"] == best_child
    assert float(version.tags["val_AP"]) == pytest.approx(rows["00000"]["val_AP"], rel=1e-4)


def test_resume_with_a_different_search_is_refused(search, monkeypatch, capsys):
    """In this process (the refusal comes before Ray starts, which `ray.init` failing would show)."""
    import ray

    from pipeline.cli import main

    def refuse_ray(*args, **kwargs):
        raise AssertionError("Ray must not start for a refused --resume")

    monkeypatch.setattr(ray, "init", refuse_ray)
    monkeypatch.chdir(REPO)
    command = search_command(search.root, "--resume")
    command[command.index("--max-epochs") + 1] = "5"
    assert main(command[2:]) == 1  # without `python run_pipeline.py`
    assert "--resume: this command's options differ from the search's" in capsys.readouterr().err
