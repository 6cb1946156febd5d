"""Leaderboard rows from trial histories, Pareto fronts on both cost axes, and the written files."""

from __future__ import annotations

import csv
import json
import math

from pipeline.tuning.leaderboard import format_table, mark_fronts, pareto_front, row_from_history, write_files


def row(trial, ap, gflops, latency, status="finished"):
    history = [
        {"epoch": 1, "val_AP": ap / 2, "val_AP50": ap, "gflops": gflops, "latency_ms": latency, "params_m": 1.0},
        {"epoch": 2, "val_AP": ap, "val_AP50": 2 * ap, "gflops": gflops, "latency_ms": latency, "params_m": 1.0},
    ]
    return row_from_history(trial, {"model.fpn_channels": 32}, history, status)


def test_row_keeps_the_best_epoch_not_the_last():
    history = [
        {"epoch": 1, "val_AP": 0.2, "val_AP50": 0.5, "gflops": 1.0, "latency_ms": 3.0, "params_m": 2.0},
        {"epoch": 2, "val_AP": 0.1, "val_AP50": 0.3, "gflops": 1.0, "latency_ms": 3.0, "params_m": 2.0},
    ]
    r = row_from_history("t", {}, history, "stopped early")
    assert (r.val_AP, r.val_AP50, r.best_epoch, r.epochs) == (0.2, 0.5, 1, 2)


def test_trial_that_never_evaluated_has_no_score():
    r = row_from_history("t", {}, [], "error")
    assert math.isnan(r.val_AP) and r.epochs == 0


def test_pareto_front_drops_dominated_trials_per_cost_axis():
    rows = [
        row("cheap", 0.10, 1.0, 30.0),
        row("mid", 0.20, 2.0, 10.0),  # faster than "cheap" though more FLOPs
        row("dominated", 0.15, 3.0, 40.0),  # "mid" is better and cheaper on both axes
        row("best", 0.30, 4.0, 50.0),
        row("tie-worse", 0.30, 5.0, 60.0),  # same AP as "best", costs more
    ]
    assert [r.trial_id for r in pareto_front(rows, "gflops")] == ["cheap", "mid", "best"]
    assert [r.trial_id for r in pareto_front(rows, "latency_ms")] == ["mid", "best"]
    mark_fronts(rows)
    by_id = {r.trial_id: r.fronts for r in rows}
    assert by_id == {
        "cheap": ["gflops"],
        "mid": ["gflops", "latency_ms"],
        "dominated": [],
        "best": ["gflops", "latency_ms"],
        "tie-worse": [],
    }


def test_files_rank_by_val_ap_and_plot_is_written(tmp_path, check_plot):
    rows = [row("a", 0.1, 1.0, 5.0), row("b", 0.3, 2.0, 6.0, "stopped early"), row_from_history("c", {}, [], "error")]
    mark_fronts(rows)
    files = write_files(rows, tmp_path)
    with files["csv"].open() as f:
        ranked_ids = [line["trial_id"] for line in csv.DictReader(f)]
    assert ranked_ids == ["b", "a", "c"]
    assert json.loads(files["json"].read_text())[0]["fronts"] == ["gflops", "latency_ms"]
    check_plot(files["plot"])
    table = format_table(rows).splitlines()
    assert table[0].split()[:5] == ["rank", "trial", "status", "ep", "val_AP"] and table[1].split()[1] == "b"
