"""A real `mlflow server` on 127.0.0.1 for the tests (HTTP, proxied artifacts, its model registry), as a cluster's
tracking server would be; started once per session and stopped by its process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from ports import free_port


@contextmanager
def running_mlflow_server(root: Path):
    """Yields the server's URI; its store, artifacts and log live under `root`."""
    port = free_port()
    log_path = root / "mlflow_server.log"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{root / 'server.db'}"]
    command += ["--artifacts-destination", str(root / "server_artifacts"), "--workers", "1"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(uri, proc, log_path)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group: uvicorn/gunicorn workers too
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _wait_until_healthy(uri: str, proc: subprocess.Popen, log_path: Path, timeout_s: float = 90) -> None:
    """Until /health answers (the server is serving), or the process died / the time is up (its log raised)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(uri + "/health", timeout=2).read()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"mlflow server did not start: {log_path.read_text()[-4000:]}") from None
            time.sleep(0.2)
