"""Time lost to a node loss: an elastic run (`ray.num_workers: [1, 2]`) against a fixed-size run (2 workers) that
waits for its node, on a simulated cluster (1-CPU raylets on this machine, a real `mlflow server` on 127.0.0.1).

Each run trains the tiny recipe of the tests (Lite0 at 128 px, 16 images, global batch 8, checkpoint every
`--checkpoint-every` steps). At step `--loss-at` one node is killed; its replacement joins `--replace-after` seconds
later (a spot node's replacement time). A baseline run without loss gives the reference wall time; the time lost is
each run's wall time minus the baseline's. Ray's defaults stand (worker-group start timeout 60 s, coordinator
view refreshed every 20 s): what a user gets. Run alone (2 heavy processes on 2 cores slow both):

    python benchmarks/bench_elastic.py [--steps 60] [--loss-at 10] [--replace-after 60]

Prints one line per run (wall, time lost, steps trained while the node was missing, resizes) and a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the tests' MLflow server launcher and tiny recipe

RAY = str(Path(sys.executable).parent / "ray")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps of each run")
    parser.add_argument("--loss-at", type=int, default=10, help="kill a node once this step is training")
    parser.add_argument("--replace-after", type=float, default=60.0, help="seconds until a new node joins")
    parser.add_argument("--checkpoint-every", type=int, default=5, help="train.checkpoint_every_steps")
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=None,
        help="RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S for the cluster (Ray's default: 60 s); a restart that first asks "
        "for the node just lost (the coordinator's view is up to 20 s old) waits this long",
    )
    return parser.parse_args()


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _config(work: Path, dataset: Path, tracking: str, workers, steps: int, every: int, marker: Path):
    from tiny_run import tiny_overrides

    from pipeline.config import load_config

    overrides = [
        *tiny_overrides(dataset, work, tracking),
        f"ray.num_workers={json.dumps(workers)}",
        "ray.shared_storage=true",
        "ray.max_failures=-1",  # both kinds restart as often as the cluster makes them
        "ray.elastic_resize_interval_s=5",
        "train.epochs=null",
        f"train.steps={steps}",
        f"train.eval_every={steps} steps",
        f"train.checkpoint_every_steps={every}",
        f"train.fault_marker={marker}",
        f"train.fault_epoch={steps + 1}",  # the trace only, no injected fault
        "mlflow.experiment=bench-elastic",
    ]
    return load_config(None, overrides)


def one_run(label: str, workers, args: argparse.Namespace, dataset: Path, tracking: str, lose: bool) -> dict:
    """Train once on a fresh simulated cluster; with `lose`, kill a node at `--loss-at` and add one
    `--replace-after` s later."""
    import ray
    from ray.cluster_utils import Cluster

    from pipeline.cluster import train as ray_train

    work = Path(tempfile.mkdtemp(prefix=f"bench-elastic-{label}-"))
    marker = work / "trace"
    trace = Path(f"{marker}.batches")
    config = _config(work, dataset, tracking, workers, args.steps, args.checkpoint_every, marker)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    events: dict[str, float] = {}
    joined: list[subprocess.Popen] = []

    def lose_and_replace() -> None:
        while not any(r["step"] >= args.loss_at for r in _records(trace)):
            time.sleep(0.05)
        cluster.remove_node(nodes[1], allow_graceful=False)
        events["lost"] = time.time()
        time.sleep(args.replace_after)
        joined.append(subprocess.Popen([RAY, "start", f"--address={cluster.address}", "--num-cpus=1", "--block"]))
        events["replaced"] = time.time()

    if lose:
        threading.Thread(target=lose_and_replace, daemon=True).start()
    start = time.time()
    try:
        outcome = ray_train.train(config)
    finally:
        wall = time.time() - start
        ray.shutdown()
        for node in joined:
            node.terminate()
            node.wait(timeout=60)
        for node in [*cluster.worker_nodes, cluster.head_node]:
            cluster.remove_node(node, allow_graceful=False)
        cluster.shutdown()
    rows = _records(trace)
    outage = [r for r in rows if "lost" in events and events["lost"] <= r["time"] <= events.get("replaced", 1e18)]
    worlds = [world for _, world in sorted({r["step"]: r["world"] for r in rows}.items())]  # the last attempt's
    return {
        "label": label,
        "wall_s": wall,
        "steps_in_outage": len({r["step"] for r in outage if r["rank"] == 0}),
        "resizes": sum(a != b for a, b in zip(worlds, worlds[1:], strict=False)),
        "final_step": int(outcome.last_metrics["step"]),
    }


def main() -> None:
    args = parse_args()
    if args.start_timeout is not None:  # the simulated nodes (and Train's controller on them) inherit it
        os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(args.start_timeout)
    from mlflow_server import running_mlflow_server

    from pipeline.data import ensure_synthetic_dataset

    root = Path(tempfile.mkdtemp(prefix="bench-elastic-"))
    dataset = ensure_synthetic_dataset(root / "tiny", num_images=24, size=128, val_fraction=0.33)
    results = []
    with running_mlflow_server(root) as tracking:
        for label, workers, lose in (
            ("baseline (2 workers, no loss)", 2, False),
            ("fixed 2, node lost", 2, True),
            ("elastic 1-2, node lost", [1, 2], True),
        ):
            result = one_run(label, workers, args, dataset, tracking, lose)
            results.append(result)
            print(json.dumps(result), flush=True)
    base = results[0]["wall_s"]
    timeout = f"{args.start_timeout:g} s" if args.start_timeout is not None else "60 s (Ray's default)"
    print(
        f"\nnode lost at step {args.loss_at}, replaced after {args.replace_after:g} s; {args.steps} steps each run; "
        f"worker-group start timeout {timeout}"
    )
    for r in results:
        lost = "" if r is results[0] else f", {r['wall_s'] - base:+.0f} s against the baseline"
        print(
            f"{r['label']}: {r['wall_s']:.0f} s{lost}; {r['steps_in_outage']} steps trained while the node was "
            f"missing; {r['resizes']} resizes"
        )


if __name__ == "__main__":
    main()
