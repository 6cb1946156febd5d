"""Ray Jobs submission to a running cluster: runtime environment (working dir + pinned requirements), token
authentication, submit / status / logs / stop / list, through Ray's `JobSubmissionClient`.

Errors a user can act on (unreachable dashboard, missing or rejected token, unknown job id) are raised as
`JobsError` with a message that says what to do; nothing here imports torch or MLflow.
"""

from __future__ import annotations

import asyncio
import getpass
import importlib.metadata
import json
import logging
import os
import secrets
import shlex
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.uri import is_uri

REPO_ROOT = Path(__file__).resolve().parents[2]
# anchored (leading "/") so that e.g. "/data" skips the dataset folder but keeps the pipeline/data package
WORKING_DIR_EXCLUDES = [
    "/.git",
    "/.venv",
    "/.venv-uv",
    "/data",
    "/outputs",
    "/mlruns",
    "/mlartifacts",
    "/mlflow.db",
    "/ray_results",
    "/.pytest_cache",
    "/.ruff_cache",
    "/.hypothesis",
    "/.whl",
    "/.gl",
    "__pycache__",
    "*.pyc",
    "*.egg-info",
]
# Ray must never come from the job's pip list: the cluster's own Ray runs the job (Ray's runtime_env docs)
NOT_INSTALLED_PER_JOB = {"ray"}
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
ENDED_BADLY = TERMINAL - {"SUCCEEDED"}  # a failure report is printed for these
DASHBOARD_HINT = (
    "is the head node up and its dashboard port (8265) reachable from here? For a cloud cluster, "
    "`ray dashboard cluster/aws-gpu.yaml` forwards it to http://127.0.0.1:8265; on Kubernetes, "
    "`kubectl port-forward svc/effdet-head-svc 8265:8265`"
)
TOKEN_HINT = (
    "set RAY_AUTH_TOKEN=<token> (or RAY_AUTH_TOKEN_PATH=<file>, or put it in ~/.ray/auth_token); "
    "`ray get-auth-token` on the head node prints the cluster's token"
)


class JobsError(RuntimeError):
    """A job-submission problem the user can fix; the message says how."""


# ------------------------------------------------------------------------------------------ address and auth


def resolve_address(address: str | None) -> str:
    """--address, else RAY_API_SERVER_ADDRESS, else RAY_ADDRESS (Ray's own order); http:// when no scheme."""
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise JobsError("no cluster address: pass --address http://HEAD:8265 or set RAY_ADDRESS")
    if address == "auto" or address.startswith("ray://"):
        raise JobsError(f"address {address!r} is not a Jobs API address; use the dashboard's http://HEAD:8265")
    if not is_uri(address):
        address = "http://" + address
    return address.rstrip("/")


def cluster_auth_mode(address: str, timeout_s: float = 10.0) -> str:
    """ "token" or "disabled", read from the dashboard's public endpoint; fails fast when it is unreachable.

    (Ray's client would otherwise hang on an unreachable host: its requests carry no timeout.)
    """
    try:
        with urllib.request.urlopen(f"{address}/api/authentication_mode", timeout=timeout_s) as response:
            return str(json.loads(response.read()).get("authentication_mode", "disabled"))
    except urllib.error.HTTPError as e:
        if e.code == 404:  # a Ray without token authentication
            return "disabled"
        raise JobsError(f"Ray dashboard at {address} answered HTTP {e.code}: {DASHBOARD_HINT}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise JobsError(f"cannot reach the Ray dashboard at {address} ({reason}): {DASHBOARD_HINT}") from None


def find_token() -> tuple[str | None, str]:
    """(token, where it came from), in Ray's precedence: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    path_env = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path_env:  # like Ray: a named token file that cannot be read is an error, not a silent fallback
        try:
            token = Path(path_env).expanduser().read_text(encoding="utf-8").strip()
        except OSError as e:
            raise JobsError(f"RAY_AUTH_TOKEN_PATH={path_env!r}: cannot read the token file ({e.strerror})") from None
        if not token:
            raise JobsError(f"RAY_AUTH_TOKEN_PATH={path_env!r}: the token file is empty")
        return token, f"RAY_AUTH_TOKEN_PATH={path_env}"
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file() and default.read_text(encoding="utf-8").strip():
        return default.read_text(encoding="utf-8").strip(), str(default)
    return None, ""


def auth_headers(address: str) -> tuple[dict[str, str], str]:
    """The Authorization header the cluster needs (none when its token auth is off), and the token's source.

    Sent explicitly so that Ray's client does not depend on RAY_AUTH_MODE being set in this shell (Ray 2.60's
    Jobs client only adds a token when RAY_AUTH_MODE=token, and then answers a bare 401 otherwise).
    """
    if cluster_auth_mode(address) != "token":
        return {}, ""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        raise JobsError(
            f"the cluster at {address} requires a token but RAY_AUTH_MODE=disabled here: unset it and {TOKEN_HINT}"
        )
    token, source = find_token()
    if token is None:
        raise JobsError(
            f"the cluster at {address} requires a token (Ray token authentication) and none was found: {TOKEN_HINT}"
        )
    return {"Authorization": f"Bearer {token}"}, source


# Ray's client logs every packaged file and upload at INFO, and warns that .git/.venv are skipped (ours are too)
QUIET_LOGGERS = {
    "ray._private.runtime_env.packaging": logging.WARNING,
    "ray.dashboard.modules.dashboard_sdk": logging.WARNING,
    "ray.dashboard.modules.job.sdk": logging.WARNING,
    "ray._private.runtime_env.working_dir": logging.ERROR,
}


def connect(address: str | None):
    """A `JobSubmissionClient` for the cluster, with clear errors for an unreachable address or a bad token."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    for name, level in QUIET_LOGGERS.items():  # after the import: dashboard_sdk sets its level when imported
        logging.getLogger(name).setLevel(level)
    address = resolve_address(address)
    headers, source = auth_headers(address)
    try:
        return JobSubmissionClient(address, headers=headers)
    except AuthenticationError:
        raise JobsError(f"the cluster at {address} rejected the token from {source} (HTTP 403): {TOKEN_HINT}") from None
    except ConnectionError as e:
        raise JobsError(f"cannot reach the Ray Jobs API at {address} ({e}): {DASHBOARD_HINT}") from None


def _call(what: str, job_id: str, fn: Callable[[], Any]) -> Any:
    """One client call; an unknown job id (HTTP 404) becomes a JobsError naming it."""
    try:
        return fn()
    except RuntimeError as e:
        if "404" in str(e) or "does not exist" in str(e):
            raise JobsError(f"{what}: no job {job_id!r} on this cluster (see `submit list`)") from None
        raise


# ------------------------------------------------------------------------------------------ runtime env


def pinned_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """The project's dependencies pinned to the versions installed here (the ones the tests ran with); a
    dependency not installed here keeps its range. Ray is left out: the cluster's Ray runs the job."""
    from packaging.requirements import Requirement

    with open(pyproject, "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    pinned = []
    for text in dependencies:
        requirement = Requirement(text)
        if requirement.name.lower() in NOT_INSTALLED_PER_JOB:
            continue
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is not None and requirement.specifier.contains(installed, prereleases=True):
            pinned.append(f"{requirement.name}{extras}=={installed}")
        else:
            pinned.append(str(requirement))
    return pinned


# `submit stop` sends SIGTERM, then SIGKILL after this many seconds (Ray's default: 3). The job closes its MLflow
# run as KILLED and a search saves its state for --resume; both need longer than 3 s on a busy head.
STOP_GRACE_ENV = {"RAY_JOB_STOP_WAIT_TIME_S": "30"}


def runtime_env(install: bool = True, env_vars: dict[str, str] | None = None, working_dir: Path = REPO_ROOT) -> dict:
    """Working dir = this repository (without venvs, data, outputs, local stores); uv = pinned requirements,
    unless `install=False` (the cluster image already has the environment: no per-job install).

    Ray's `uv` runtime env clones the interpreter Ray runs from (a venv: copied; a system Python: a virtualenv over
    its site-packages), installs the requirements with that environment's own `python -m uv` (a dependency of the
    project, so a head started from `make setup`'s venv has it) and runs the entrypoint's `python` inside it. The
    clone is made once per node and requirement set, then reused. Ray's `pip` runtime env needs pip in the clone,
    which a uv-made venv does not have.
    """
    env: dict[str, Any] = {"working_dir": str(working_dir), "excludes": list(WORKING_DIR_EXCLUDES)}
    if install:
        env["uv"] = {"packages": pinned_requirements(working_dir / "pyproject.toml"), "uv_check": False}
    env["env_vars"] = {**STOP_GRACE_ENV, **(env_vars or {})}
    return env


# ------------------------------------------------------------------------------------------ job life cycle


@dataclass(frozen=True)
class Submitted:
    job_id: str
    address: str
    entrypoint: str


def new_job_id(command: str) -> str:
    """Readable and unique: effdet-train-20260101-120000-ab12."""
    return f"effdet-{command}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def submit(
    address: str | None,
    pipeline_args: list[str],
    install: bool = True,
    env_vars: dict[str, str] | None = None,
    job_id: str | None = None,
    python: str = "python",
) -> Submitted:
    """Submit `python run_pipeline.py <pipeline_args>` as a Ray job running in a copy of this repository."""
    if not pipeline_args:
        raise JobsError("nothing to run: give the pipeline command after `--`, e.g. `submit -- train --config ...`")
    client = connect(address)
    entrypoint = shlex.join([python, "run_pipeline.py", *pipeline_args])
    job_id = job_id or new_job_id(pipeline_args[0])
    metadata = {"pipeline.command": pipeline_args[0], "submitted_by": getpass.getuser()}
    submitted = client.submit_job(
        entrypoint=entrypoint,
        submission_id=job_id,
        runtime_env=runtime_env(install, env_vars),
        metadata=metadata,
    )
    return Submitted(submitted, client.get_address(), entrypoint)


def status(address: str | None, job_id: str) -> dict[str, Any]:
    """The job's status, message, entrypoint and times (as Ray reports them)."""
    client = connect(address)
    info = _call("status", job_id, lambda: client.get_job_info(job_id))
    return {
        "job_id": job_id,
        "status": str(getattr(info.status, "value", info.status)),
        "message": info.message or "",
        "entrypoint": info.entrypoint,
        "start_time": _when(info.start_time),
        "end_time": _when(info.end_time),
    }


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000).isoformat(sep=" ", timespec="seconds") if ms else "-"


def logs(address: str | None, job_id: str) -> str:
    client = connect(address)
    return _call("logs", job_id, lambda: client.get_job_logs(job_id))


@dataclass(frozen=True)
class Followed:
    status: str
    streamed: bool  # whether any log line reached the terminal (not when the runtime env failed to set up)


def follow(address: str | None, job_id: str, out=None) -> Followed:
    """Stream the job's logs until it ends (Ray's websocket tail); returns its final status."""
    out = out or sys.stdout
    client = connect(address)
    _call("logs", job_id, lambda: client.get_job_status(job_id))  # unknown id: a clear error, not a closed socket
    streamed = False

    async def tail() -> None:
        nonlocal streamed
        async for chunk in client.tail_job_logs(job_id):
            streamed = streamed or bool(chunk.strip())
            out.write(chunk)
            out.flush()

    asyncio.run(tail())
    return Followed(str(getattr(client.get_job_status(job_id), "value", "")), streamed)


FAILURE_TAIL_LINES = 30


def failure_report(address: str | None, job_id: str, include_log: bool = True) -> list[str]:
    """Why a job that ENDED_BADLY ended, as lines to print: Ray's reason, then the last lines of the job's log
    (the entrypoint's own error) or, when the job never logged (its runtime env failed to set up, which only
    Ray's message records), the end of Ray's message. `include_log=False`: the caller has shown the log."""
    client = connect(address)
    info = _call("status", job_id, lambda: client.get_job_info(job_id))
    reason, _, detail = (info.message or "no reason recorded by Ray").strip().partition("\n")
    lines = [f"reason: {reason}"]
    if not include_log:
        return lines
    log_tail = _call("logs", job_id, lambda: client.get_job_logs(job_id)).rstrip().splitlines()[-FAILURE_TAIL_LINES:]
    if log_tail:
        lines += [f"last {len(log_tail)} lines of the job's log:", *(f"  {line}" for line in log_tail)]
    elif detail.strip():
        lines += [f"  {line}" for line in detail.strip().splitlines()[-FAILURE_TAIL_LINES:]]
    return lines


def stop(address: str | None, job_id: str) -> bool:
    """Ask Ray to stop the job (SIGTERM to its driver, then SIGKILL); False when it had already ended."""
    client = connect(address)
    return bool(_call("stop", job_id, lambda: client.stop_job(job_id)))


def list_jobs(address: str | None) -> list[dict[str, Any]]:
    client = connect(address)
    jobs = []
    for info in client.list_jobs():
        jobs.append(
            {
                "job_id": info.submission_id or info.job_id,
                "status": str(getattr(info.status, "value", info.status)),
                "start_time": _when(info.start_time),
                "entrypoint": info.entrypoint,
            }
        )
    return sorted(jobs, key=lambda j: j["start_time"])
