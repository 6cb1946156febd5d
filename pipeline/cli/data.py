"""The `data` subcommand: `synth` (synthetic datasets), `import-voc` (Pascal VOC), `import-yolo` / `export-yolo`
(the Ultralytics and Darknet layouts), `validate` and `analyze` (boxes
against the model's anchors)."""

from __future__ import annotations

import argparse
import sys

from pipeline.config.data import DEFAULT_MAX_IMAGE_PIXELS, SYNTH_PRESETS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="create, import and validate dataset directories")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")

    synth = actions.add_parser(
        "synth", help="write a deterministic synthetic dataset (demo shapes, dense, overhead, aerial)"
    )
    synth.add_argument("--out", required=True, help="dataset directory to create")
    synth.add_argument(
        "--preset",
        choices=SYNTH_PRESETS,
        default="shapes",
        help="shapes: the demo (1-6 shapes of 3 classes per image); dense: 15-60 small overlapping objects of 5 "
        "classes (8-40 px at 384 px) on a textured background; overhead: a scene seen from above (cars and trucks "
        "of 7-26 px at 512 px in rows at any heading, tree crowns, buildings, shadows); aerial: large images (2,560 px "
        "by default) of overhead scenes, hundreds of 7-64 px objects each (for data.tiling)",
    )
    synth.add_argument("--images", type=int, default=400, help="number of images (default 400)")
    synth.add_argument(
        "--size",
        type=int,
        default=None,
        help="image side in px (default: 256 shapes, 384 dense, 512 overhead, 2560 aerial)",
    )
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--val-fraction", type=float, default=0.2)
    synth.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    synth.set_defaults(func=_synth)

    voc = actions.add_parser("import-voc", help="convert a folder of Pascal VOC XML files + images")
    voc.add_argument("voc_dir", help="folder searched recursively for *.xml (images beside them or in JPEGImages/)")
    _add_import_arguments(voc, "")
    voc.set_defaults(func=_import_voc)

    yolo = actions.add_parser("import-yolo", help="convert a YOLO dataset (Ultralytics data.yaml, or flat Darknet)")
    yolo.add_argument("yolo_dir", help="a folder holding data.yaml, the data.yaml itself, or a flat Darknet folder")
    yolo.add_argument("--names", default=None, help="class names file, one per line (flat layout; default: found)")
    _add_import_arguments(yolo, " (used only where the data.yaml gives no val split)")
    yolo.set_defaults(func=_import_yolo)

    export = actions.add_parser("export-yolo", help="write a dataset directory in the Ultralytics YOLO layout")
    export.add_argument("dataset_dir", help="a local dataset directory")
    export.add_argument("--out", required=True, help="folder to create (images/, labels/, data.yaml)")
    export.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    export.set_defaults(func=_export_yolo)

    validate = actions.add_parser("validate", help="report every problem of a dataset directory or bucket prefix")
    validate.add_argument("dataset_dir", help="a local directory or an object-store prefix (s3://bucket/set, gs://...)")
    validate.add_argument(
        "--check-images",
        default="all",
        metavar="all|sample:N|none",
        help="image files to read: all (default), a fixed sample of N per split, or none; local files are decoded "
        "whole, objects in a bucket checked from their header (format and size)",
    )
    validate.add_argument("--skip-images", action="store_true", help="the same as --check-images none")
    validate.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        metavar="N",
        help="an image past N pixels is an error, from its JSON record and its header (data.max_image_pixels; "
        f"default {DEFAULT_MAX_IMAGE_PIXELS:,})",
    )
    validate.set_defaults(func=_validate)

    from pipeline.cli.common import add_config_arguments

    analyze = actions.add_parser(
        "analyze", help="box sizes against the configured model's anchors, at its input size, with advice"
    )
    analyze.add_argument("dataset_dir", help="dataset directory (its training split is measured)")
    add_config_arguments(analyze)
    analyze.add_argument("--plot", default=None, metavar="PNG", help="also draw box sizes against anchor sizes")
    analyze.set_defaults(func=_analyze)


def _add_import_arguments(parser: argparse.ArgumentParser, split_note: str) -> None:
    parser.add_argument("--out", required=True, help="dataset directory to create")
    parser.add_argument("--val-fraction", type=float, default=0.2, help=f"share of images for val{split_note}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def _synth(args: argparse.Namespace) -> int:
    from pipeline.data.synth import PRESETS, write_synthetic_dataset

    size = args.size or PRESETS[args.preset].default_size
    return _run(
        lambda: write_synthetic_dataset(
            args.out, args.images, size, args.seed, args.val_fraction, args.overwrite, preset=args.preset
        ),
        f"wrote {args.images} {args.preset} images ({size} px) to {args.out}",
    )


def _import_voc(args: argparse.Namespace) -> int:
    from pipeline.data.voc import import_voc

    def run() -> None:
        report = import_voc(args.voc_dir, args.out, args.val_fraction, args.seed, args.overwrite)
        for problem in report.problems:
            print(problem)
        print(report.summary())

    return _run(run, f"imported {args.voc_dir} to {args.out}")


def _import_yolo(args: argparse.Namespace) -> int:
    from pipeline.data.yolo import import_yolo

    def run() -> None:
        report = import_yolo(args.yolo_dir, args.out, args.names, args.val_fraction, args.seed, args.overwrite)
        for problem in report.problems:
            print(problem)
        print(report.summary())

    return _run(run, f"imported {args.yolo_dir} to {args.out}")


def _export_yolo(args: argparse.Namespace) -> int:
    from pipeline.data.yolo import export_yolo

    return _run(
        lambda: print(export_yolo(args.dataset_dir, args.out, args.overwrite).summary()), f"exported to {args.out}"
    )


def _validate(args: argparse.Namespace) -> int:
    from pipeline.data.layout import DatasetError
    from pipeline.data.validate import validate_dataset

    try:
        check_images = "none" if args.skip_images else args.check_images
        report = validate_dataset(args.dataset_dir, check_images=check_images, max_pixels=args.max_image_pixels)
    except (DatasetError, ValueError) as e:  # an unreachable bucket, a bad --check-images
        print(f"error: {e}", file=sys.stderr)
        return 1
    for problem in report.problems:
        print(problem)
    print(report.summary())
    return 1 if report.fatal else 0


def _analyze(args: argparse.Namespace) -> int:
    from pipeline.cli.common import load_job_config
    from pipeline.config import ConfigError
    from pipeline.data.analyze import analyze, report_lines
    from pipeline.data.auto_fit import fit_to_data, training_records
    from pipeline.data.coco_index import load_split
    from pipeline.data.layout import DatasetError
    from pipeline.evaluation.plots import anchor_plot

    try:
        config = load_job_config(args, [f"data.dir={args.dataset_dir}"])
        records = load_split(config.data.dir, "train")[2]
        config, choices = fit_to_data(config, records)  # what training would choose; the anchors are reported below
        analysis = analyze(config, records=training_records(config, records))
    except (ConfigError, DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if choices:
        print("auto (fitted to the training boxes; pin a key to change it):")
        print("\n".join(f"  {choice.describe()}" for choice in choices))
    print("\n".join(report_lines(analysis)))
    if args.plot:
        print(f"plot: {anchor_plot(analysis, args.plot)}")
    return 0


def _run(action, done_message: str) -> int:
    """Run ``action``; a user error prints its message and exits 1 instead of a traceback."""
    from pipeline.data.layout import DatasetError

    try:
        action()
    except (DatasetError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(done_message)
    return 0
