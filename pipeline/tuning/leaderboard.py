"""A search's results as a leaderboard and its accuracy/cost Pareto fronts (table, CSV, JSON and a PNG plot)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

COSTS = {"gflops": "GFLOPs", "latency_ms": "latency (ms)"}  # cost axis -> label; each gets its own front


@dataclass
class TrialRow:
    """One trial's outcome: its params, its best val mAP over the epochs it ran, and what its model costs."""

    trial_id: str
    params: dict[str, Any]
    status: str  # finished | stopped early | error | pending
    epochs: int  # epochs it reported (ASHA may stop it before max_epochs)
    val_AP: float  # best over its epochs; nan when it never evaluated
    val_AP50: float  # at the epoch of the best val_AP
    best_epoch: int
    params_m: float
    gflops: float
    latency_ms: float
    checkpoint_path: str | None = None  # the trial's latest Ray Train checkpoint (holds the best weights too)
    fronts: list[str] = field(default_factory=list)  # cost axes on whose Pareto front it lies


def row_from_history(trial_id: str, params: dict[str, Any], history: list[dict[str, Any]], status: str) -> TrialRow:
    """A row from a trial's reported metrics, oldest first (one dict per epoch)."""
    nan = float("nan")
    evaluated = [m for m in history if _finite(m.get("val_AP"))]
    best = max(evaluated, key=lambda m: m["val_AP"]) if evaluated else {}
    last = history[-1] if history else {}
    return TrialRow(
        trial_id=trial_id,
        params=params,
        status=status,
        epochs=int(last.get("epoch", 0) or 0),
        val_AP=float(best.get("val_AP", nan)),
        val_AP50=float(best.get("val_AP50", nan)),
        best_epoch=int(best.get("epoch", 0) or 0),
        params_m=float(last.get("params_m", nan)),
        gflops=float(last.get("gflops", nan)),
        latency_ms=float(last.get("latency_ms", nan)),
        checkpoint_path=last.get("checkpoint_path"),
    )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def pareto_front(rows: list[TrialRow], cost: str) -> list[TrialRow]:
    """Trials no other trial beats on both axes (higher val_AP, lower `cost`), cheapest first."""
    scored = [r for r in rows if _finite(r.val_AP) and _finite(getattr(r, cost))]
    front = []
    for row in scored:
        dominated = any(
            o.val_AP >= row.val_AP
            and getattr(o, cost) <= getattr(row, cost)
            and (o.val_AP > row.val_AP or getattr(o, cost) < getattr(row, cost))
            for o in scored
        )
        if not dominated:
            front.append(row)
    return sorted(front, key=lambda r: getattr(r, cost))


def mark_fronts(rows: list[TrialRow]) -> dict[str, list[TrialRow]]:
    fronts = {cost: pareto_front(rows, cost) for cost in COSTS}
    for cost, front in fronts.items():
        for row in front:
            row.fronts.append(cost)
    return fronts


def ranked(rows: list[TrialRow]) -> list[TrialRow]:
    """Best val_AP first; trials without one last."""
    return sorted(rows, key=lambda r: (not _finite(r.val_AP), -(r.val_AP if _finite(r.val_AP) else 0.0)))


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def format_table(rows: list[TrialRow]) -> str:
    """The leaderboard as aligned text; `*F`/`*L` mark the FLOPs and latency Pareto fronts."""
    keys = sorted({k for r in rows for k in r.params})
    header = ["rank", "trial", "status", "ep", "val_AP", "AP50", "params_M", "GFLOPs", "lat_ms", "pareto", *keys]
    lines = [header]
    for i, r in enumerate(ranked(rows), 1):
        marks = "".join({"gflops": "F", "latency_ms": "L"}[c] for c in r.fronts)
        lines.append(
            [
                str(i),
                r.trial_id,
                r.status,
                str(r.epochs),
                f"{r.val_AP:.4f}",
                f"{r.val_AP50:.4f}",
                f"{r.params_m:.2f}",
                f"{r.gflops:.3f}",
                f"{r.latency_ms:.1f}",
                marks or "-",
                *(_short(r.params.get(k, "")) for k in keys),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines)


def write_files(rows: list[TrialRow], out_dir: Path) -> dict[str, Path]:
    """leaderboard.csv / .json / .txt and pareto.png in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ordered = ranked(rows)
    files = {
        "csv": out_dir / "leaderboard.csv",
        "json": out_dir / "leaderboard.json",
        "txt": out_dir / "leaderboard.txt",
    }
    flat = [{**{k: v for k, v in asdict(r).items() if k != "params"}, **r.params} for r in ordered]
    columns = list(dict.fromkeys(k for row in flat for k in row))
    with files["csv"].open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)
    files["json"].write_text(json.dumps([asdict(r) for r in ordered], indent=2, default=str), encoding="utf-8")
    files["txt"].write_text(format_table(rows) + "\n", encoding="utf-8")
    files["plot"] = plot_fronts(rows, out_dir / "pareto.png")
    return files


def plot_fronts(rows: list[TrialRow], path: Path) -> Path:
    """Two panels, val mAP against GFLOPs and against latency: every trial a dot, the front a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(COSTS), figsize=(6 * len(COSTS), 4.5))
    for ax, (cost, label) in zip(axes, COSTS.items(), strict=True):
        scored = [r for r in rows if _finite(r.val_AP) and _finite(getattr(r, cost))]
        for status, marker in (("finished", "o"), ("stopped early", "x"), ("error", "s"), ("pending", ".")):
            group = [r for r in scored if r.status == status]
            if group:
                ax.scatter([getattr(r, cost) for r in group], [r.val_AP for r in group], marker=marker, label=status)
        front = pareto_front(rows, cost)
        if front:
            ax.step([getattr(r, cost) for r in front], [r.val_AP for r in front], where="post", color="k", lw=1)
            for r in front:
                ax.annotate(
                    r.trial_id, (getattr(r, cost), r.val_AP), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
        ax.set_xlabel(label)
        ax.set_ylabel("best val mAP (COCO AP)")
        ax.set_title(f"val mAP vs {label}: Pareto front")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
