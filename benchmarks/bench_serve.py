"""Online serving under load: our Ray Serve app (`run_pipeline.py serve`) against `mlflow models serve` on the same
registered version, then ours again while the alias moves twice.

A bounded load test on loopback: C client threads, each sending one JPEG after the other for T seconds; per server
it prints latency p50 / p95 / p99 (ms), requests/s and errors. The model is a random-init Lite0 (3 classes) with
its ONNX serving graph, registered twice (versions 1 and 2) in a fresh SQLite store; both servers run ONNX Runtime
on the same threads. Run alone (2 heavy processes on 2 cores slow both):

    python benchmarks/bench_serve.py                       # 8 clients x 20 s, 320 px model, 640 x 480 images
    python benchmarks/bench_serve.py --clients 16 --seconds 30 --size 512
    python benchmarks/bench_serve.py --use-gpu --replicas 2 --gpus-per-replica 0.5 --skip-mlflow  # 2 on one GPU
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from ports import free_port  # noqa: E402  (the tests' port rule: outside the ephemeral range)

NAME = "bench-serve"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", type=int, default=320, help="model input size")
    parser.add_argument("--threads", type=int, default=2, help="inference threads of each server")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument("--replicas", default="1", help="ours: N or MIN-MAX")
    parser.add_argument("--use-gpu", action="store_true", help="ours on the GPU (--gpus-per-replica each)")
    parser.add_argument("--gpus-per-replica", type=float, default=1.0)
    parser.add_argument("--skip-mlflow", action="store_true", help="ours only")
    return parser.parse_args()


def register(uri: str, size: int) -> None:
    import torch

    import effdet_core as E
    from pipeline.data import LabelMap
    from pipeline.registry import register_model

    labels = LabelMap((1, 2, 3), ("circle", "square", "triangle"))
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = E.create_model("lite0", num_classes=3, image_size=size).eval()
        metrics = {"val_AP": 0.1 * seed, "val_AP50": 0.2 * seed}
        register_model(model, labels, NAME, uri, metrics, "bench", measure_latency=False, force=True)
    from pipeline.registry.registry import client

    client(uri).set_registered_model_alias(NAME, "live", "1")


def jpeg(width: int = 640, height: int = 480) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise TimeoutError(f"no answer on {url} within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def load(url: str, body: bytes, headers: dict, clients: int, seconds: float, version_of, during=None) -> dict:
    """C threads posting `body` back to back for `seconds`: latencies, errors and the versions that answered."""
    latencies: list[float] = []
    errors: list[str] = []
    versions: list[tuple[float, str]] = []
    lock = threading.Lock()
    start = time.monotonic()
    end = start + seconds

    def client() -> None:
        while time.monotonic() < end:
            begin = time.perf_counter()
            try:
                request = urllib.request.Request(url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=120) as response:
                    answer = json.loads(response.read())
                elapsed = time.perf_counter() - begin
                with lock:
                    latencies.append(elapsed)
                    versions.append((time.monotonic() - start, version_of(answer)))
            except Exception as e:  # every failed request counts, whatever its kind
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    if during is not None:
        during(start)
    for thread in threads:
        thread.join()
    wall = time.monotonic() - start
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "rps": len(latencies) / wall,
        "p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p95": float(np.percentile(ms, 95)) if len(ms) else float("nan"),
        "p99": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        "versions": versions,
    }


def line(label: str, r: dict) -> str:
    return (
        f"{label:<34} {r['requests']:>6} req  {r['rps']:6.1f} req/s  p50 {r['p50']:7.1f}  p95 {r['p95']:7.1f}  "
        f"p99 {r['p99']:7.1f} ms  errors {r['errors']}" + (f" {r['first_errors']}" if r["errors"] else "")
    )


def ours(args, uri: str, body: bytes, work: Path) -> list[str]:
    port = free_port()
    command = [sys.executable, "run_pipeline.py", "serve", f"models:/{NAME}@live", "--tracking-uri", uri]
    command += ["--port", str(port), "--cpus-per-replica", str(args.threads), "--follow-interval-s", "1"]
    command += ["--max-batch-size", str(args.max_batch_size), "--batch-wait-ms", str(args.batch_wait_ms)]
    command += ["--replicas", args.replicas]
    if args.use_gpu:
        command += ["--use-gpu", "--gpus-per-replica", str(args.gpus_per_replica)]
    with open(work / "ours.log", "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return _load_ours(args, uri, body, f"http://127.0.0.1:{port}", proc)
        finally:
            stop(proc)


def _load_ours(args, uri: str, body: bytes, url: str, proc: subprocess.Popen) -> list[str]:
    from pipeline.registry.registry import client

    wait_until_up(f"{url}/healthz", proc)
    headers = {"Content-Type": "image/jpeg"}
    version = lambda answer: answer["model"]["version"]  # noqa: E731
    warm = load(f"{url}/predict", body, headers, args.clients, 3, version)  # warm-up, not reported
    steady = load(f"{url}/predict", body, headers, args.clients, args.seconds, version)
    moves = ((args.seconds / 3, "2"), (2 * args.seconds / 3, "1"))

    def move_twice(start: float) -> None:
        for at, target in moves:
            time.sleep(max(0.0, start + at - time.monotonic()))
            client(uri).set_registered_model_alias(NAME, "live", target)

    moving = load(f"{url}/predict", body, headers, args.clients, args.seconds, version, during=move_twice)
    # the first answer of the new version after each move (answers finish out of order across clients)
    served = [min((t for t, v in moving["versions"] if v == target and t > at), default=None) for at, target in moves]
    when = ", ".join(
        f"v{target} moved at {at:.1f} s, answering from {s:.1f} s" if s else f"v{target} moved at {at:.1f} s, never"
        for (at, target), s in zip(moves, served, strict=True)
    )
    with urllib.request.urlopen(f"{url}/model") as response:
        calls = json.loads(response.read())["batches"]
    total = warm["requests"] + warm["errors"] + steady["requests"] + moving["requests"] + moving["errors"]
    return [
        line("ours (Ray Serve, batched)", steady),
        line("ours, the alias moved twice", moving) + f"  ({when})",
        f"{'':<34} {total / max(calls, 1):.1f} requests per model call on average ({calls} calls)",
    ]


def mlflow_serve(args, uri: str, body: bytes, work: Path) -> list[str]:
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": str(args.threads)}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@live"]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    url = f"http://127.0.0.1:{port}"
    with open(work / "mlflow.log", "w") as log:
        proc = subprocess.Popen(
            command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_until_up(f"{url}/ping", proc)
            payload = json.dumps({"dataframe_records": [{"image": base64.b64encode(body).decode("ascii")}]}).encode()
            headers = {"Content-Type": "application/json"}
            load(f"{url}/invocations", payload, headers, args.clients, 3, lambda _: "1")  # warm-up
            result = load(f"{url}/invocations", payload, headers, args.clients, args.seconds, lambda _: "1")
            return [line("mlflow models serve (1 worker)", result)]
        finally:
            stop(proc)


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        uri = f"sqlite:///{work / 'mlflow.db'}"
        register(uri, args.size)
        body = jpeg()
        engine = "GPU" if args.use_gpu else f"ONNX Runtime, {args.threads} threads"
        print(
            f"lite0 {args.size} px ({engine}), {args.replicas} replica(s), 640 x 480 JPEG of {len(body):,} bytes, "
            f"{args.clients} clients x {args.seconds:g} s on loopback",
            flush=True,
        )
        lines = ours(args, uri, body, work) + ([] if args.skip_mlflow else mlflow_serve(args, uri, body, work))
        print("\n".join(lines))


if __name__ == "__main__":
    main()
