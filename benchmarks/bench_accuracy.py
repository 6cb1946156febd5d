"""Accuracy under one wall-clock budget: this project's defaults against the reference `effdet` package.

Ours: `run_pipeline.py train` with the project's defaults (Ray Train, 2 workers) on DIR for `--steps` optimizer
steps; its training time (train + evaluation periods, as the run reports them) becomes the budget. Reference:
`effdet`'s tf_efficientdet_lite0 with the same ImageNet Lite0 backbone weights and input size, trained in its own
loop (DetBenchTrain, AdamW, horizontal flips, warm-up + cosine over the steps that fit the same budget, 2 threads).
Both are scored by the same pycocotools evaluation of the validation split.

    python benchmarks/bench_accuracy.py --data data/dense --preset dense --size 384 --steps 300
    python benchmarks/bench_accuracy.py --data data/demo --size 256 --steps 300

Prints one line per figure (wall time, AP, AP50 for each, and the AP50 difference). effdet is a test/benchmark
dependency only (`make setup` installs it with the test extras).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config.data import SYNTH_PRESETS  # noqa: E402  (after the path)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset directory (written with --preset if absent)")
    parser.add_argument("--preset", default="dense", choices=SYNTH_PRESETS)
    parser.add_argument("--images", type=int, default=300, help="images when the dataset is generated")
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="input size of ours (default: auto) and effdet's (default: the images' size)",
    )
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps of our run (sets the budget)")
    parser.add_argument("--minutes", type=float, default=None, help="our run's time budget (train --minutes)")
    parser.add_argument(
        "--old-defaults",
        action="store_true",
        help="ours with the defaults before auto fitting: "
        "256 px, official levels and anchors, the default augmentation",
    )
    parser.add_argument("--skip-effdet", action="store_true", help="our run only")
    parser.add_argument("--budget-s", type=float, default=None, help="skip our run: give effdet this budget")
    parser.add_argument("--effdet-lr", type=float, default=1e-3, help="AdamW learning rate of the reference")
    parser.add_argument("--effdet-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="outputs/bench_accuracy", help="working folder (runs, stores)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra overrides for ours")
    return parser.parse_args()


def ensure_data(args: argparse.Namespace) -> Path:
    from pipeline.data import write_synthetic_dataset
    from pipeline.data.layout import annotation_path

    root = Path(args.data)
    if not annotation_path(root, "val").is_file():
        from pipeline.data.synth import PRESETS

        size = args.size or PRESETS[args.preset].default_size
        write_synthetic_dataset(root, num_images=args.images, size=size, preset=args.preset)
    return root.resolve()


def native_size(data: Path) -> int:
    """The training images' median longer side, rounded to a multiple of 128 (effdet's input when --size is not
    given)."""
    from pipeline.data.coco_index import load_split

    records = load_split(data, "train")[2]
    longer = sorted(max(r.height, r.width) for r in records)[len(records) // 2]
    return max(128, round(longer / 128) * 128)


def run_ours(args: argparse.Namespace, data: Path, out: Path) -> dict[str, float]:
    """The project's defaults through the real CLI; returns its best val metrics and its training seconds."""
    out.mkdir(parents=True, exist_ok=True)
    store = out / "mlflow.db"
    length = ["--minutes", str(args.minutes)] if args.minutes else ["--set", f"train.steps={args.steps or 300}"]
    size = ["--set", f"model.image_size={args.size}"] if args.size else []
    old = [f"{key}=null" for key in ("min_level", "max_level", "anchor_scale", "anchor_ratios")]
    old = (
        [
            x
            for item in ["model.image_size=256", *[f"model.{k}" for k in old], "data.augment=default"]
            for x in ("--set", item)
        ]
        if args.old_defaults
        else []
    )
    command = [
        sys.executable,
        str(ROOT / "run_pipeline.py"),
        "train",
        *length,
        *size,
        *old,
        "--set",
        f"data.dir={data}",
        "--set",
        "data.generate_if_missing=false",
        "--set",
        f"train.output_dir={out / 'outputs'}",
        "--set",
        f"ray.storage_path={out / 'ray_results'}",
        "--set",
        f"mlflow.tracking_uri=sqlite:///{store}",
        *[x for item in args.overrides for x in ("--set", item)],
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("efficientdet")
    run = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
    seconds = sum(
        m.value for key in ("train_time_s", "eval_time_s") for m in client.get_metric_history(run.info.run_id, key)
    )
    metrics = run.data.metrics
    return {"AP": metrics["best_val_AP"], "AP50": metrics["best_val_AP50"], "train_s": seconds, "wall_s": wall}


def reference_model(num_classes: int, size: int):
    """effdet's tf_efficientdet_lite0 at `size`, its backbone loaded with the same ImageNet Lite0 weights as ours."""
    import effdet

    from effdet_core.backbone import _packaged_state_dict, load_backbone_weights

    model = effdet.create_model(
        "tf_efficientdet_lite0",
        num_classes=num_classes,
        image_size=(size, size),
        pretrained=False,
        pretrained_backbone=False,
    )
    load_backbone_weights(model.backbone, _packaged_state_dict("tf_efficientnet_lite0"))
    return model


def effdet_targets(targets: list[dict], size: int) -> dict[str, torch.Tensor]:
    """Our targets -> effdet's: yxyx boxes, 1-based classes, -1 padding."""
    most = max(1, max(len(t["boxes"]) for t in targets))
    bbox = torch.full((len(targets), most, 4), -1.0)
    cls = torch.full((len(targets), most), -1.0)
    for i, t in enumerate(targets):
        n = len(t["boxes"])
        bbox[i, :n] = t["boxes"][:, [1, 0, 3, 2]]
        cls[i, :n] = t["labels"].float() + 1
    scale = torch.ones(len(targets))
    return {"bbox": bbox, "cls": cls, "img_scale": scale, "img_size": torch.tensor([[size, size]] * len(targets))}


def run_effdet(args: argparse.Namespace, data: Path, budget_s: float) -> dict[str, float]:
    """effdet's own loop for `budget_s` seconds of training (steps sized after timing the first ones)."""
    from effdet import DetBenchPredict, DetBenchTrain
    from torch.utils.data import DataLoader

    from pipeline.data import AugmentOptions, DetectionDataset, DetectionTransform, collate_fn, load_label_map
    from pipeline.evaluation import evaluate_coco

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    label_map = load_label_map(data)
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # the Lite backbone's normalisation
    flips = AugmentOptions(hflip_prob=0.5)
    train_tf = DetectionTransform(args.size, mean, std, train=True, options=flips, seed=0)
    train_set = DetectionDataset(data, "train", train_tf, label_map)
    val_set = DetectionDataset(data, "val", DetectionTransform(args.size, mean, std), label_map)
    loader = DataLoader(train_set, args.effdet_batch, shuffle=True, collate_fn=collate_fn, drop_last=True)
    model = reference_model(label_map.num_classes, args.size)
    bench = DetBenchTrain(model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.effdet_lr, weight_decay=1e-2)
    start, step, total, warmup = time.perf_counter(), 0, None, 0
    while total is None or step < total:
        for images, targets in loader:
            if total is not None and step >= total:
                break
            loss = bench(images, effdet_targets(targets, args.size))["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            step += 1
            if step == 5 and total is None:  # size the schedule to the budget from the measured step time
                per_step = (time.perf_counter() - start) / 5
                total, warmup = max(6, int(budget_s / per_step)), max(1, len(loader))
            if total is not None:
                progress = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
                factor = step / warmup if step < warmup else 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))
                for group in optimizer.param_groups:
                    group["lr"] = args.effdet_lr * factor
    train_s = time.perf_counter() - start
    predictor = DetBenchPredict(model).eval()
    predictions = []
    with torch.no_grad():
        for images, targets in DataLoader(val_set, 8, collate_fn=collate_fn):
            for det, target in zip(predictor(images), targets, strict=True):  # [100, 6] x1 y1 x2 y2 score class
                keep = det[:, 4] > 0
                predictions.append(
                    {
                        "image_id": target["image_id"],
                        "boxes": (det[keep, :4] / target["scale"]).numpy(),
                        "scores": det[keep, 4].numpy(),
                        "labels": (det[keep, 5] - 1).long().numpy(),
                    }
                )
    metrics = evaluate_coco(val_set.coco, predictions, label_map)
    return {"AP": metrics["AP"], "AP50": metrics["AP50"], "train_s": train_s, "steps": step}


def main() -> None:
    args = parse_args()
    data = ensure_data(args)
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ours = None
    if args.budget_s is None:
        ours = run_ours(args, data, out / f"ours-{int(time.time())}")
    budget = args.budget_s if ours is None else ours["train_s"]
    args.size = args.size or native_size(data)
    reference = None if args.skip_effdet else run_effdet(args, data, budget)
    print(f"dataset: {data} (effdet at {args.size} px)")
    if ours is not None:
        what = "old defaults" if args.old_defaults else "ours"
        length = f"train.minutes={args.minutes:g}" if args.minutes else f"{args.steps or 300} steps"
        print(
            f"{what}: val AP {ours['AP']:.4f}  AP50 {ours['AP50']:.4f}  training {ours['train_s']:.0f} s "
            f"(job wall {ours['wall_s']:.0f} s, {length})"
        )
    if reference is None:
        (out / "last.json").write_text(json.dumps({"ours": ours}, indent=2))
        return
    print(
        f"effdet: val AP {reference['AP']:.4f}  AP50 {reference['AP50']:.4f}  training {reference['train_s']:.0f} s "
        f"({reference['steps']} steps, AdamW lr {args.effdet_lr})"
    )
    if ours is not None:
        print(f"AP50 ours - effdet: {100 * (ours['AP50'] - reference['AP50']):+.1f} points")
    (out / "last.json").write_text(json.dumps({"ours": ours, "effdet": reference}, indent=2))


if __name__ == "__main__":
    main()
