"""What checkpoints between evaluations cost: the smoke config on Ray Train (2 workers), once with checkpoints at
evaluations only and once also every N optimizer steps, with Ray storage on local disk and in a bucket (the tests'
loopback S3 server, moto: on the same 2 cores, so its figures are an upper bound of a real store's).

Prints per run: the time spent training (the evaluation periods' `train_time_s`, in-period checkpoints included;
Ray start-up and evaluations left out), the checkpoints written and what a step waited for each (`checkpoint_s`,
logged to MLflow per checkpoint: saving the state plus the report, which includes the upload unless `--upload
async`).

    .venv/bin/python benchmarks/bench_checkpoints.py [--every 5] [--epochs 10] [--stores local s3] [--upload async]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_data import start_s3  # noqa: E402  (this folder: the same loopback S3 set-up)

from pipeline.config import load_config, replace  # noqa: E402


def run_once(config, root: Path, storage: str, every: int | None, upload: str) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    from pipeline.cluster import train as ray_train

    name = f"bench-{'every' if every else 'evals'}-{int(time.time() * 1000)}"
    config = replace(
        config,
        train={"checkpoint_every_steps": every, "checkpoint_upload": upload, "output_dir": str(root / "outputs")},
        ray={"storage_path": storage, "name": name},
        mlflow={"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "bench-checkpoints"},
    )
    outcome = ray_train.train(config)
    client = MlflowClient(outcome.run.tracking_uri)
    waits = client.get_metric_history(outcome.run.run_id, "checkpoint_s")
    periods = client.get_metric_history(outcome.run.run_id, "train_time_s")  # each period's training, slowest rank
    return {
        "train_s": sum(m.value for m in periods),
        "checkpoints": len(waits),
        "wait_s_mean": statistics.mean(m.value for m in waits),
        "wait_s_max": max(m.value for m in waits),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=5, help="train.checkpoint_every_steps of the second run")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--stores", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    parser.add_argument("--upload", default="sync", choices=["sync", "async"], help="train.checkpoint_upload")
    args = parser.parse_args()
    base = load_config(REPO / "configs" / "smoke.yaml", [f"train.epochs={args.epochs}", "train.eval_every=5"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = replace(base, data={"dir": str(root / "data")})
        from pipeline.training.inputs import ensure_dataset

        ensure_dataset(base.data)
        server = start_s3(root) if "s3" in args.stores else None
        try:
            print(f"smoke config, {args.epochs} epochs, 2 workers; evaluations every 5 epochs; {args.upload} upload")
            print(f"{'store':>6} {'checkpoints':>24} {'train s':>8} {'written':>8} {'wait s mean':>12} {'max':>7}")
            for store in args.stores:
                storage = str(root / "ray_results") if store == "local" else _bucket(server)
                for every in (None, args.every):
                    r = run_once(base, root, storage, every, args.upload)
                    label = f"every {args.every} steps + evals" if every else "evaluations only"
                    print(
                        f"{store:>6} {label:>24} {r['train_s']:>8.2f} {r['checkpoints']:>8} "
                        f"{r['wait_s_mean']:>12.3f} {r['wait_s_max']:>7.3f}",
                        flush=True,
                    )
        finally:
            if server:
                server.stop()
    return 0


def _bucket(server) -> str:
    server.client().create_bucket(Bucket="ckpt")
    return "s3://ckpt/runs"


if __name__ == "__main__":
    sys.exit(main())
