"""Fixtures of the cluster tests: a real `ray start --head` on 127.0.0.1 with token authentication, a simulated
two-node cluster (`ray.cluster_utils.Cluster`), and the tiny training run of tests/tiny_run.py.

Every Ray process started here is stopped by its process group or its PID, never with `ray stop` (which would end
every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from ports import free_port
from tiny_run import (  # noqa: F401 (fixtures)
    local_ray,
    one_torch_thread,
    tiny_bucket_dataset,
    tiny_config,
    tiny_dataset,
)

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


@dataclass
class RayHead:
    address: str  # the dashboard / Jobs API, http://127.0.0.1:PORT
    token: str
    temp_dir: Path
    log: Path


def _processes_under(directory: Path) -> list[int]:
    """PIDs (other than ours) whose command line or working directory lies under `directory`: what a Ray started
    with that temp dir left behind (e.g. a job driver in its own session)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(directory) in cmdline or cwd.startswith(str(directory)):
            found.append(int(entry.name))
    return found


def _stop_process_group(proc: subprocess.Popen, directory: Path) -> None:
    """SIGKILL at once: on SIGTERM `ray start --block` drains its node for up to 30 s first, and nothing of a test
    head outlives the test (its temp dir is removed next). Then whatever it started in other sessions (a job's
    driver), until none is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while (leftovers := _processes_under(directory)) and time.monotonic() < deadline:
        for pid in leftovers:  # started by this head (its temp dir), so ours to end
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _wait_for_jobs_api(address: str, token: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + 120
    request = urllib.request.Request(f"{address}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
    while True:
        try:
            urllib.request.urlopen(request, timeout=5).read()
            return
        except OSError:
            # `ray start --block` outlives a dashboard that failed to start: its log line ends the wait at once
            failed = "failed with the following error" in log.read_text()
            if failed or proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"ray head did not start:\n{log.read_text()[-4000:]}") from None
            time.sleep(1)


def _bare_python_bin(temp_dir: Path) -> Path:
    """A bin folder whose `python` is the interpreter the venv was made from: Python without the project's
    dependencies, as on a machine where nobody activated the venv."""
    bin_dir = temp_dir / "bare-bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(Path(sys._base_executable).resolve())
    return bin_dir


def _linked_venv(temp_dir: Path) -> Path:
    """A venv whose site-packages entries are symlinks to this venv's: the same packages (and their bytecode), but
    Ray's uv runtime env clones it (`shutil.copytree`, links kept as links) in a second, where copying this venv's
    7 GB of CUDA torch takes 150 s on the 2-core CI machine. Its `bin/ray` is the console script on its own
    interpreter, as `.venv/bin/ray` is on the project's.

    The `*.dist-info` folders are real copies: uv does not count a linked one as installed and would reinstall
    every package through the links, into this venv (`_unchanged_sources` guards against that)."""
    venv = temp_dir / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    source = Path(sysconfig.get_paths()["purelib"])
    target = venv / source.relative_to(sys.prefix)
    for entry in source.iterdir():
        if entry.name.endswith(".dist-info"):
            shutil.copytree(entry, target / entry.name)
        else:
            (target / entry.name).symlink_to(entry)
    (venv / "bin" / "uv").symlink_to(VENV_BIN / "uv")  # `python -m uv` runs the binary beside its interpreter
    ray_script = venv / "bin" / "ray"
    ray_script.write_text(
        f"#!{venv}/bin/python\nimport sys\nfrom ray.scripts.scripts import main\n\nsys.exit(main())\n"
    )
    ray_script.chmod(0o755)
    return venv


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head --block` on 127.0.0.1 (free ports, 2 CPUs, token auth with a fresh token), in its own
    process group. Started as the README says, `.venv/bin/ray` without activating the venv: the `python` first on
    the head's PATH is a bare interpreter, so a job that does not install its requirements cannot import them.
    The venv is a linked copy of this one (`_linked_venv`), so that a job's uv runtime env clones it quickly."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))  # short: Ray's unix sockets live under it
    token = secrets.token_hex(16)
    dashboard_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH", "VIRTUAL_ENV"))}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != VENV_BIN]
    bare_bin = _bare_python_bin(temp_dir)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, PATH=os.pathsep.join([str(bare_bin), *path]))
    ports = {
        "--port": free_port(),
        "--dashboard-port": dashboard_port,
        "--dashboard-agent-listen-port": free_port(),
        "--metrics-export-port": free_port(),
        "--ray-client-server-port": free_port(),
        "--runtime-env-agent-port": free_port(),
    }
    command = [
        str(_linked_venv(temp_dir) / "bin" / "ray"),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        "--num-cpus=2",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        "--block",
        *(f"{flag}={port}" for flag, port in ports.items()),
    ]
    log = temp_dir / "head.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    head = RayHead(f"http://127.0.0.1:{dashboard_port}", token, temp_dir, log)
    sources_before = _source_stamps()
    try:
        _wait_for_jobs_api(head.address, token, proc, log)
        yield head
    finally:
        _stop_process_group(proc, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert _source_stamps() == sources_before, "a job's runtime env wrote into this venv through the linked venv"


def _source_stamps() -> dict[str, int]:
    """mtimes of a few big packages' sources in this venv: a reinstall through the links would change them (and
    leave every byte-compiled file stale)."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    files = [purelib / "torch" / "__init__.py", purelib / "timm" / "__init__.py", purelib / "mlflow" / "__init__.py"]
    return {str(f): f.stat().st_mtime_ns for f in files}


@pytest.fixture
def client_env(ray_head, tmp_path, monkeypatch) -> dict[str, str]:
    """The environment of a user's shell that holds the cluster's token (and nothing else of Ray's)."""
    for key in [k for k in os.environ if k.startswith(("RAY_ADDRESS", "RAY_AUTH", "RAY_API_SERVER"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.ray/auth_token of this machine
    monkeypatch.setenv("RAY_AUTH_TOKEN", ray_head.token)
    return dict(os.environ)


@contextlib.contextmanager
def simulated_cluster(head_cpus: int):
    """A `ray.cluster_utils.Cluster` on this machine (its head with `head_cpus` CPUs, the dashboard on 127.0.0.1 for
    Ray's state API), this process connected to it; add nodes with `cluster.add_node`. Shut down afterwards."""
    import ray
    from ray.cluster_utils import Cluster

    head = {
        "num_cpus": head_cpus,
        "include_dashboard": True,
        "dashboard_host": "127.0.0.1",
        "dashboard_port": free_port(),
    }
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        yield cluster
    finally:
        ray.shutdown()
        # the nodes killed at once (a graceful stop waits seconds per node for nothing a test needs); then
        # `shutdown()`, with no node left to stop, deletes <Ray temp root>/ray_current_cluster, which a bare ray.init()
        # anywhere on this machine would otherwise take for a running cluster to connect to
        for node in [*cluster.worker_nodes, cluster.head_node]:
            cluster.remove_node(node, allow_graceful=False)
        cluster.shutdown()
