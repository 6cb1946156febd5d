"""`run_pipeline.py registry list|show|register|promote|export`: browse the MLflow model registry, register a
training checkpoint, move aliases, export.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC

from pipeline.cli.common import add_tracking_uri, guarded, tracking_uri
from pipeline.data import storage


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("registry", help="registered models: list, show, register, promote, export")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    actions = parser.add_subparsers(dest="registry_command", metavar="ACTION")

    list_ = actions.add_parser("list", help="registered versions with aliases and key tags")
    list_.add_argument("name", nargs="?", help="only this registered model")
    list_.set_defaults(func=guarded(_list))

    show = actions.add_parser("show", help="one version: aliases, tags, source")
    show.add_argument("ref", help="NAME (= NAME@champion), NAME@ALIAS or NAME/VERSION, optionally models:/...")
    show.set_defaults(func=guarded(_show))

    register = actions.add_parser("register", help="register a training checkpoint as a new version")
    register.add_argument("checkpoint", help="a checkpoint directory (or its checkpoint.pt), e.g. .../best_checkpoint")
    register.add_argument("name", help="registered model name")
    register.add_argument(
        "--data", required=True, help="the dataset whose val split the checkpoint's metrics come from (champion rule)"
    )
    register.add_argument("--run-id", default=None, help="the MLflow run that trained it (links the version)")
    register.add_argument("--weights", choices=["best", "last"], default="best", help="best epoch (default) or last")
    register.add_argument("--force", action="store_true", help="make it champion regardless")
    register.add_argument(
        "--no-onnx", action="store_true", help="store no ONNX Runtime serving graph (the version serves with PyTorch)"
    )
    register.set_defaults(func=guarded(_register))

    promote = actions.add_parser("promote", help="point an alias (default champion) at a version")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument("--alias", default="champion")
    promote.add_argument("--force", action="store_true", help="promote even if not better / other dataset")
    promote.set_defaults(func=guarded(_promote))

    export = actions.add_parser("export", help="export the network to ONNX, checked against PyTorch")
    export.add_argument("ref", help="NAME@ALIAS or NAME/VERSION, optionally models:/...")
    export.add_argument("--format", choices=["onnx"], default="onnx")
    export.add_argument("--out", required=True, help="output .onnx file")
    export.add_argument("--opset", type=int, default=18)
    export.set_defaults(func=guarded(_export))

    for sub in (list_, show, register, promote, export):
        add_tracking_uri(sub)


def _list(args: argparse.Namespace) -> int:
    from pipeline.registry.registry import aliases_by_version, list_versions

    uri = tracking_uri(args)
    versions = list_versions(uri, args.name)
    if not versions:
        print(f"no registered models in {uri}")
        return 0
    aliases = {name: aliases_by_version(uri, name) for name in {v.name for v in versions}}
    print(
        f"{'name':<20} {'ver':>4} {'aliases':<20} {'val_AP':>7} {'AP50':>7} {'variant':<8} {'size':>9} "
        f"{'params':>8} {'GMACs':>6} {'ms':>7} {'dataset':<16}"
    )
    for v in versions:
        t = v.tags
        print(
            f"{v.name:<20} {v.version:>4} {','.join(aliases[v.name].get(str(v.version), [])) or '-':<20} "
            f"{_num(t.get('val_AP')):>7} {_num(t.get('val_AP50')):>7} {t.get('variant', '?'):<8} "
            f"{t.get('image_size', '?'):>9} {_scaled(t.get('params'), 1e6, 'M'):>8} "
            f"{_scaled(t.get('flops'), 1e9, ''):>6} {t.get('latency_ms', '-'):>7} "
            f"{t.get('dataset_fingerprint', '-'):<16}"
        )
    return 0


def _num(value: str | None) -> str:
    return f"{float(value):.4f}" if value else "-"


def _scaled(value: str | None, unit: float, suffix: str) -> str:
    return f"{int(value) / unit:.2f}{suffix}" if value else "-"


def _show(args: argparse.Namespace) -> int:
    from datetime import datetime

    from pipeline.registry.registry import aliases_by_version, get_version

    uri = tracking_uri(args)
    v = get_version(uri, args.ref)
    created = datetime.fromtimestamp(v.creation_timestamp / 1000, tz=UTC).isoformat(timespec="seconds")
    print(f"model:    {v.name}")
    print(f"version:  {v.version}  (models:/{v.name}/{v.version})")
    print(f"aliases:  {', '.join(aliases_by_version(uri, v.name).get(str(v.version), [])) or '-'}")
    print(f"status:   {v.status}, created {created}")
    print(f"source:   {v.source}" + (f"  (run {v.run_id})" if v.run_id else ""))
    print("tags:")
    for key in sorted(v.tags):
        print(f"  {key:<20} {v.tags[key]}")
    return 0


def _register(args: argparse.Namespace) -> int:

    from pipeline.registry import dataset_fingerprint, register_from_checkpoint
    from pipeline.training.checkpoint import CheckpointError

    try:
        registration = register_from_checkpoint(
            args.checkpoint,
            args.name,
            tracking_uri(args),
            metrics=None,  # the chosen weights' val metrics, from the checkpoint
            dataset_fingerprint=dataset_fingerprint(storage.absolute(args.data), "val"),
            run_id=args.run_id,
            weights=args.weights,
            force=args.force,
            onnx=not args.no_onnx,
            data_dir=storage.absolute(args.data),
        )
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    aliases = ", ".join(registration.aliases) or "none"
    print(f"registered {registration.model_uri} (aliases: {aliases}): {registration.decision.reason}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from pipeline.registry import PromotionRefused, promote

    try:
        decision = promote(tracking_uri(args), args.name, args.version, alias=args.alias, force=args.force)
    except PromotionRefused as e:
        print(f"refused: {e}", file=sys.stderr)
        return 1
    print(f"{args.name}@{args.alias} -> version {args.version} ({decision.reason})")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pipeline.registry import export_onnx, load_detector

    detector, version = load_detector(tracking_uri(args), args.ref)
    report = export_onnx(detector.package.model, args.out, opset=args.opset)
    diffs = ", ".join(f"{k} {v:.2e}" for k, v in report.max_abs_diff.items())
    print(f"exported {version.name} version {version.version} to {report.path}")
    print(f"onnxruntime matches PyTorch for batch sizes {list(report.batch_sizes_checked)} (max |diff|: {diffs})")
    return 0
