"""The `submit` subcommand: run a pipeline command as a Ray job on a cluster, and watch or stop it.

`python run_pipeline.py submit [--address URL] [--follow] [--no-install] [--env K=V] -- train ...` (or `-- tune ...`)
`python run_pipeline.py submit status|logs [--follow]|stop JOB_ID`, `python run_pipeline.py submit list`

The address defaults to RAY_API_SERVER_ADDRESS, then RAY_ADDRESS (the dashboard, http://HEAD:8265).
"""

from __future__ import annotations

import argparse
import sys

ACTIONS = ("status", "logs", "stop", "list")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "submit",
        help="run a pipeline command as a Ray job on a cluster; status, logs, stop, list jobs",
        description=(
            "submit [options] -- COMMAND ARGS: run `run_pipeline.py COMMAND ARGS` on the cluster in a copy of this "
            "repository.  submit status|logs|stop JOB_ID, submit list: look after submitted jobs."
        ),
    )
    _add_common(parser)
    parser.add_argument("--follow", action="store_true", help="stream the job's logs until it ends")
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="do not install the pinned requirements per job (the `python` on the cluster's PATH already has them)",
    )
    parser.add_argument("--job-id", default=None, help="submission id (default: effdet-COMMAND-DATE-TIME-xxxx)")
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="environment variable for the job (repeatable)"
    )
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="-- COMMAND ARGS, or status|logs|stop JOB_ID, or list")
    # the pipeline's own subcommand parsers (complete by the time `run` is called): a command to submit is parsed
    # by exactly what would parse it on the cluster
    parser.set_defaults(func=run, commands=subparsers.choices)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address", default=None, help="Ray dashboard URL (default: RAY_API_SERVER_ADDRESS/RAY_ADDRESS)"
    )


def _action_parser(action: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"run_pipeline.py submit {action}")
    _add_common(parser)
    if action != "list":
        parser.add_argument("job_id")
    if action == "logs":
        parser.add_argument("--follow", action="store_true", help="stream the logs until the job ends")
    return parser


def run(args: argparse.Namespace) -> int:
    from pipeline.cluster.submission import JobsError
    from pipeline.config import ConfigError

    rest = list(args.rest)
    try:
        if rest and rest[0] in ACTIONS:
            action_args = _action_parser(rest[0]).parse_args(rest[1:])
            return _ACTIONS[rest[0]](_merge(args, action_args))
        if rest and rest[0] == "--":
            rest = rest[1:]
        if not rest:
            raise JobsError("nothing to submit: `submit [options] -- train ...`, or submit status|logs|stop|list")
        return _submit(args, rest)
    except (JobsError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _merge(args: argparse.Namespace, action_args: argparse.Namespace) -> argparse.Namespace:
    """Options may come before or after the action: `submit --address X status ID` == `submit status ID --address X`."""
    merged = vars(args).copy()
    merged.update({k: v for k, v in vars(action_args).items() if v not in (None, False)})
    return argparse.Namespace(**merged)


def _check_command(pipeline_args: list[str], commands: dict[str, argparse.ArgumentParser]) -> None:
    """Refuse a command the cluster would reject, before uploading anything: unknown command or bad arguments, and
    for `train` a config that does not load (file paths are read here, relative to where you run `submit`)."""
    from pipeline.config import ConfigError

    command = pipeline_args[0]
    if command not in commands or command == "submit":
        choices = sorted(set(commands) - {"submit"})
        raise ConfigError(f"submit: {command!r} is not a pipeline command; choose one of {choices}")
    try:
        parsed = commands[command].parse_args(pipeline_args[1:])
    except SystemExit as e:  # argparse already printed what is wrong
        raise ConfigError(f"submit: the arguments of `{command}` are not valid (see above)") from e
    if command == "train":
        from pipeline.cli.common import train_config

        for note in job_path_notes(train_config(parsed)):
            print(f"note: {note}", flush=True)


def job_path_notes(config) -> list[str]:
    """A job runs in a temporary copy of the repository: relative outputs and the default SQLite store land in it
    and are lost with it. Said before submitting, not refused (a single-node test cluster may want exactly that)."""
    from pathlib import Path

    from pipeline.uri import is_uri

    notes = []
    for key, value in (("ray.storage_path", config.ray.storage_path), ("train.output_dir", config.train.output_dir)):
        if not is_uri(value) and not Path(value).is_absolute():
            notes.append(f"{key}={value!r} is relative: on the cluster it lands in the job's temporary working dir")
    uri = config.mlflow.tracking_uri
    if uri is None:
        notes.append(
            "mlflow.tracking_uri is not set: the job uses the cluster's MLFLOW_TRACKING_URI, else a SQLite "
            "file in its temporary working dir"
        )
    elif uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        notes.append(f"mlflow.tracking_uri={uri!r} is relative: it lands in the job's temporary working dir")
    return notes


def _submit(args: argparse.Namespace, pipeline_args: list[str]) -> int:
    from pipeline.cluster import submission

    _check_command(pipeline_args, args.commands)
    env_vars = dict(_parse_env(item) for item in args.env)
    submitted = submission.submit(
        args.address, pipeline_args, install=not args.no_install, env_vars=env_vars, job_id=args.job_id
    )
    print(f"submitted {submitted.job_id} to {submitted.address}\n  entrypoint: {submitted.entrypoint}", flush=True)
    if not args.follow:
        print(
            f"  watch: python run_pipeline.py submit logs {submitted.job_id} --follow\n"
            f"  stop:  python run_pipeline.py submit stop {submitted.job_id}",
            flush=True,
        )
        return 0
    return _follow(args.address, submitted.job_id)


def _parse_env(item: str) -> tuple[str, str]:
    from pipeline.config import ConfigError

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--env {item!r} must look like KEY=VALUE")
    return key, value


def _follow(address: str | None, job_id: str) -> int:
    from pipeline.cluster import submission

    try:
        followed = submission.follow(address, job_id)
    except KeyboardInterrupt:
        print(f"\nstopped following; the job goes on (stop it: submit stop {job_id})", file=sys.stderr)
        return 130
    print(f"job {job_id} {followed.status}", flush=True)
    # the log just streamed above; the reason, or what never reached the log
    if followed.status in submission.ENDED_BADLY:
        print("\n".join(submission.failure_report(address, job_id, include_log=not followed.streamed)), flush=True)
    return 0 if followed.status == "SUCCEEDED" else 1


def _status(args: argparse.Namespace) -> int:
    from pipeline.cluster import submission

    info = submission.status(args.address, args.job_id)
    info["message"] = info["message"].partition("\n")[0]  # Ray may append 20,000 characters of log to it
    for key in ("job_id", "status", "message", "entrypoint", "start_time", "end_time"):
        print(f"{key + ':':12} {info[key]}")
    if info["status"] in submission.ENDED_BADLY:
        print("\n".join(submission.failure_report(args.address, args.job_id)))
    return 0


def _logs(args: argparse.Namespace) -> int:
    from pipeline.cluster import submission

    if args.follow:
        return _follow(args.address, args.job_id)
    print(submission.logs(args.address, args.job_id), end="", flush=True)
    return 0


def _stop(args: argparse.Namespace) -> int:
    from pipeline.cluster import submission

    if submission.stop(args.address, args.job_id):
        print(f"stop requested for {args.job_id} (see `submit status {args.job_id}`)")
    else:
        print(f"{args.job_id} had already ended: {submission.status(args.address, args.job_id)['status']}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from pipeline.cluster import submission

    rows = submission.list_jobs(args.address)
    if not rows:
        print("no jobs on this cluster")
    for row in rows:
        print(f"{row['job_id']:40} {row['status']:10} {row['start_time']:20} {row['entrypoint']}")
    return 0


_ACTIONS = {"status": _status, "logs": _logs, "stop": _stop, "list": _list}
