"""`run_pipeline.py serve models:/NAME@ALIAS`: a registered version behind an HTTP API on Ray Serve, following
the alias (`pipeline.serving`). On this machine's Ray, or a cluster's (`RAY_ADDRESS`, or as a submitted job);
`--write-config FILE` writes the same application as a Serve config file for `serve deploy FILE` instead."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from pipeline.cli.common import add_backend, add_tracking_uri, guarded, tracking_uri


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve a registered model over HTTP on Ray Serve")
    parser.add_argument("model", help="models:/NAME@ALIAS (followed as it moves) or models:/NAME/VERSION (pinned)")
    parser.add_argument("--replicas", default="1", metavar="N|MIN-MAX", help="replicas; a range autoscales")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs (and inference threads) each")
    parser.add_argument("--use-gpu", action="store_true", help="a GPU (or --gpus-per-replica of one) per replica")
    parser.add_argument("--gpus-per-replica", type=float, default=1.0, help="fractional: replicas share a GPU")
    parser.add_argument("--max-batch-size", type=int, default=8, help="concurrent requests per model call")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0, help="how long a request waits for others")
    parser.add_argument("--follow-interval-s", type=float, default=30.0, help="how often replicas read the alias")
    parser.add_argument("--slice", default="auto", metavar="auto|off|PX", help="as `predict --slice`")
    parser.add_argument("--max-body-mb", type=float, default=64.0, help="larger request bodies get 413")
    parser.add_argument(
        "--max-image-pixels", type=int, default=None, metavar="N", help="larger images get 413 (default 400,000,000)"
    )
    parser.add_argument("--request-timeout-s", type=float, default=60.0, help="answered 408 past this")
    parser.add_argument("--host", default="127.0.0.1", help="address the HTTP proxy binds (default loopback)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--name", default="", help="the Serve application's name (default effdet-NAME)")
    parser.add_argument("--write-config", metavar="FILE", help="write a Serve config file and exit")
    add_backend(parser)
    add_tracking_uri(parser)
    parser.set_defaults(func=guarded(run))


def options_from(args: argparse.Namespace):
    from pipeline.data.decode import DEFAULT_MAX_IMAGE_PIXELS
    from pipeline.serving.options import ServeOptions, parse_replicas

    low, high = parse_replicas(args.replicas)
    return ServeOptions(
        model=args.model,
        tracking_uri=tracking_uri(args),
        min_replicas=low,
        max_replicas=high,
        cpus_per_replica=args.cpus_per_replica,
        use_gpu=args.use_gpu,
        gpus_per_replica=args.gpus_per_replica,
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms,
        follow_interval_s=args.follow_interval_s,
        backend=args.backend,
        slice=args.slice,
        max_body_mb=args.max_body_mb,
        max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS if args.max_image_pixels is None else args.max_image_pixels,
        request_timeout_s=args.request_timeout_s,
        host=args.host,
        port=args.port,
        name=args.name,
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.registry.registry import get_version

    options = options_from(args)
    if args.write_config:
        return write_config(options, Path(args.write_config))
    version = get_version(options.tracking_uri, options.model)  # a bad reference fails before Ray starts
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # `submit stop` and Kubernetes send SIGTERM
        signal.signal(sig, lambda *_: stop.set())
    return serve_until(options, f"{version.name} version {version.version}", stop)


def serve_until(options, serving: str, stop: threading.Event) -> int:
    import ray
    from ray import serve

    from pipeline.serving.app import build_app

    started = not ray.is_initialized()
    cluster = os.environ.get("RAY_ADDRESS")
    if started:  # RAY_ADDRESS (a cluster, a submitted job), else a new local Ray: the rule `train` follows
        ray.init(address=cluster or "local", log_to_driver=True)
    try:
        http = {"host": options.host, "port": options.port, "request_timeout_s": options.request_timeout_s}
        serve.start(http_options=http)
        try:
            serve.run(build_app(options), name=options.name, route_prefix="/")
        except RuntimeError as e:  # a replica that could not start (the version does not load): Serve's reason
            print(f"error: the Serve application {options.name!r} did not start: {e}", flush=True)
            serve.delete(options.name)  # not left failed on a cluster
            return 1
        replicas = (
            f"{options.min_replicas}-{options.max_replicas} replicas (autoscaled)"
            if options.autoscaling
            else f"{options.min_replicas} replica(s)"
        )
        follows = "pinned" if "@" not in options.model else f"following the alias every {options.follow_interval_s:g} s"
        print(
            f"serving {serving} ({follows}) on {replicas} at http://{options.host}:{options.port}/ "
            "(POST /predict, GET /model, GET /healthz, POST /model/refresh)",
            flush=True,
        )
        stop.wait()
        print(f"stopping {options.name}", flush=True)
        serve.delete(options.name)
    finally:
        if started:
            if not cluster:  # our own Ray: Serve goes with it; on a cluster other applications keep serving
                serve.shutdown()
            ray.shutdown()
    return 0


def write_config(options, path: Path) -> int:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(options.serve_config(), sort_keys=False), encoding="utf-8")
    print(f"wrote {path}: `serve deploy {path}` runs {options.model} on the cluster (the project installed there)")
    return 0
