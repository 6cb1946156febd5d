"""`run_pipeline.py models`: the EfficientDet variants with their scaling, parameters and FLOPs."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list EfficientDet variants with params and FLOPs")
    parser.add_argument("--num-classes", type=int, default=90, help="classes of the head (default: COCO's 90)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    import effdet_core as E

    print(
        f"{'variant':<8} {'input':>10} {'backbone':<22} {'W':>4} {'D':>3} {'head':>4} {'fusion':<6} "
        f"{'params':>8} {'GMACs':>8}"
    )
    for name, config in E.VARIANTS.items():
        with torch.device("meta"):  # shapes only: no memory, no compute
            model = E.create_model(config, num_classes=args.num_classes)
        params = E.count_parameters(model) / 1e6
        flops = E.count_flops(config, num_classes=args.num_classes) / 1e9
        size = "x".join(str(s) for s in config.image_size)
        print(
            f"{name:<8} {size:>10} {config.backbone:<22} {config.fpn_channels:>4} {config.fpn_repeats:>3} "
            f"{config.head_repeats:>4} {config.fusion:<6} {params:>7.2f}M {flops:>8.2f}"
        )
    return 0
