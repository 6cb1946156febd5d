"""The tracking store: which one a job uses (config, MLFLOW_TRACKING_URI, or a SQLite file beside the job), and a
reachability check that fails in seconds, before any training, with what to do."""

from __future__ import annotations

import logging
import os
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from pipeline.uri import is_uri

SQLITE_PREFIX = "sqlite:///"
# MLflow logs two INFO lines ("Creating initial MLflow database tables...") when it creates a SQLite store; the
# run header already says where the store is. Its warnings and errors still show.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)


class TrackingError(RuntimeError):
    """The tracking store cannot be used; raised before any training starts."""


def resolve_tracking_uri(configured: str | None, cwd: str | os.PathLike | None = None) -> str:
    """Config value, else MLFLOW_TRACKING_URI, else `sqlite:///<cwd>/mlflow.db`; local paths made absolute.

    Ray workers chdir into a session folder, so a relative SQLite or file path must be resolved here, in the
    driver, before they see it.
    """
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    base = Path(cwd or os.getcwd())
    if uri.startswith(SQLITE_PREFIX):
        db_path = uri[len(SQLITE_PREFIX) :]
        if db_path and not db_path.startswith("/") and db_path != ":memory:":
            return SQLITE_PREFIX + str((base / db_path).resolve())
        return uri
    if uri.startswith("file:") or not is_uri(uri):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("1", "true"):
            local = uri.removeprefix("file://").removeprefix("file:")
            return (base / local).resolve().as_uri()
        raise TrackingError(
            f"tracking URI {uri!r} is a plain file store, which MLflow 3 refuses without "
            "MLFLOW_ALLOW_FILE_STORE=true; use sqlite:///<path>/mlflow.db locally or an http:// tracking server"
        )
    return uri


@contextmanager
def _quick_http_failures():
    """MLflow retries HTTP calls for minutes by default; a reachability check should fail in seconds."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "10"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_tracking_store(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with a clear message, when the tracking store cannot be reached or written."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
                response.read()
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({reason}); start it (e.g. `mlflow server --host "
                f"127.0.0.1 --port PORT`) or set mlflow.tracking_uri / MLFLOW_TRACKING_URI"
            ) from None
    elif uri.startswith(SQLITE_PREFIX):
        parent = Path(uri[len(SQLITE_PREFIX) :]).parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise TrackingError(f"tracking URI {uri}: directory {parent} does not exist or is not writable")
    from mlflow.tracking import MlflowClient

    try:
        with _quick_http_failures():
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:  # any store error means we cannot track this run
        raise TrackingError(f"MLflow tracking store {uri} is not usable: {type(e).__name__}: {e}") from None


def ui_hint(uri: str) -> str:
    """How to look at the runs of this tracking store."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    # the mlflow next to this interpreter: a fresh user's shell usually has the venv's bin/ off PATH
    beside = Path(sys.executable).parent / "mlflow"
    mlflow_cli = str(beside) if beside.is_file() else "mlflow"
    return f"{mlflow_cli} ui --backend-store-uri {uri}  (then open http://127.0.0.1:5000)"
