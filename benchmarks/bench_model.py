"""Train-step throughput and predict latency of one variant, side by side with `effdet` when it is installed.

Both models hold the same weights (effdet's random init, loaded into ours) and run interleaved in one process,
so machine noise hits both alike. Prints medians and our/effdet ratios. On CPU our model also predicts through
ONNX Runtime (the serving graph a registration stores: `pipeline.registry.onnx_backend`, post-processing in
PyTorch as in serving; `--no-onnx` skips it). On a GPU (`--device cuda`) both train under the same autocast
(`--amp bf16|fp16`, fp16 with a grad scaler each) and the peak memory is printed.

    python benchmarks/bench_model.py --variant d0 --size 512 --train-batch 4 --predict-batch 1 --threads 2
    python benchmarks/bench_model.py --device cuda --amp bf16 --train-batch 16 --predict-batch 8
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import effdet_core as E


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="d0")
    parser.add_argument("--size", type=int, default=512, help="input size in px (square)")
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--predict-batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed iterations per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--num-classes", type=int, default=90)
    parser.add_argument("--boxes-per-image", type=int, default=8)
    parser.add_argument("--no-effdet", action="store_true", help="measure our model only")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime predict measurement")
    parser.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda")
    parser.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="autocast (GPU runs)")
    return parser.parse_args()


def make_targets(batch: int, size: int, num_boxes: int, num_classes: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, num_boxes, 2, generator=gen) * size * 0.6
    wh = 16 + torch.rand(batch, num_boxes, 2, generator=gen) * size * 0.3
    boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=-1)  # [B, n, 4] xyxy
    labels = torch.randint(0, num_classes, (batch, num_boxes), generator=gen)
    return boxes, labels


class Precision:
    """The same autocast and loss scaling for both runners."""

    def __init__(self, device: torch.device, amp: str) -> None:
        self.device, self.amp = device, amp
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


class OurRunner:
    name = "effdet_core"

    def __init__(self, model: E.EfficientDet, precision: Precision):
        self.train_model = E.EfficientDetForTraining(model, validate=True)
        self.predict_model = E.EfficientDetForPrediction(model)
        fused = {"fused": True} if precision.device.type == "cuda" else {}  # as the training loop on a GPU
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, **fused)
        self.precision = Precision(precision.device, precision.amp)

    def train_step(self, images, boxes, labels):
        self.train_model.train()
        images = images.contiguous(memory_format=torch.channels_last)  # as the loop's batches (`_to_device`)
        targets = [{"boxes": b, "labels": c} for b, c in zip(boxes, labels, strict=True)]
        with self.precision.autocast():
            loss = self.train_model(images, targets)["loss"]
        self.precision.step(loss, self.optimizer)

    def predict(self, images):
        self.predict_model.eval()
        self.predict_model(images)


class EffdetRunner:
    name = "effdet"

    def __init__(self, model, precision: Precision):
        from effdet import DetBenchPredict, DetBenchTrain

        self.train_model = DetBenchTrain(model).to(precision.device)  # its anchors are a buffer of the bench
        self.predict_model = DetBenchPredict(model).to(precision.device)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)  # as effdet's own train.py
        self.precision = Precision(precision.device, precision.amp)

    def train_step(self, images, boxes, labels):
        self.train_model.train()
        target = {"bbox": boxes[..., [1, 0, 3, 2]], "cls": labels.float() + 1}  # effdet: yxyx, 1-based classes
        with self.precision.autocast():
            loss = self.train_model(images, target)["loss"]
        self.precision.step(loss, self.optimizer)

    def predict(self, images):
        self.predict_model.eval()
        with torch.no_grad():
            self.predict_model(images)


class OnnxRunner:
    """Our model's serving graph in ONNX Runtime plus `effdet_core.postprocess`: predict only."""

    name = "ours(onnxruntime)"

    def __init__(self, model: E.EfficientDet, threads: int, workdir: str):
        from pipeline.registry.onnx_backend import OnnxPredictor
        from pipeline.registry.serving_graph import build_serving_graph

        start = time.perf_counter()
        path = build_serving_graph(model, f"{workdir}/model.onnx")
        self.export_s = time.perf_counter() - start
        self.predictor = OnnxPredictor(path, model.config, model.num_classes, E.PostprocessConfig(), threads=threads)

    def predict(self, images):
        self.predictor(images)


def build_runners(args, precision: Precision) -> list:
    ours = E.create_model(args.variant, num_classes=args.num_classes, image_size=args.size)
    ours.to(precision.device)
    ours.to(memory_format=torch.channels_last)  # as the training loop (`train.channels_last: true`) and `Detector`
    if args.no_effdet:
        return [OurRunner(ours, precision)]
    try:
        import effdet
    except ImportError:
        print("effdet not installed: measuring effdet_core only (pip install -e '.[test]' for the comparison)")
        return [OurRunner(ours, precision)]
    reference = effdet.create_model(
        f"tf_efficientdet_{args.variant}",
        pretrained_backbone=False,
        num_classes=args.num_classes,
        image_size=(args.size, args.size),
    )
    E.load_effdet_weights(ours, reference.state_dict())
    return [OurRunner(ours, precision), EffdetRunner(reference.to(precision.device), precision)]


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_interleaved(runners, fn_name: str, inputs, repeats: int, warmup: int) -> dict[str, list[float]]:
    runners = [r for r in runners if hasattr(r, fn_name)]
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    for i in range(warmup + repeats):
        for runner in runners if i % 2 == 0 else reversed(runners):  # alternate who goes first
            synchronize()
            start = time.perf_counter()
            getattr(runner, fn_name)(*inputs)
            synchronize()  # GPU work is asynchronous: time it to its end
            if i >= warmup:
                times[runner.name].append(time.perf_counter() - start)
    return times


def main() -> None:
    args = parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed sizes, as in training
    torch.manual_seed(0)
    precision = Precision(device, args.amp)
    runners = build_runners(args, precision)
    train_images = torch.randn(args.train_batch, 3, args.size, args.size, device=device)
    boxes, labels = make_targets(args.train_batch, args.size, args.boxes_per_image, args.num_classes)
    boxes, labels = boxes.to(device), labels.to(device)
    predict_images = torch.randn(args.predict_batch, 3, args.size, args.size, device=device)

    train = time_interleaved(runners, "train_step", (train_images, boxes, labels), args.repeats, args.warmup)
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as onnx_dir:
        if device.type == "cpu" and not args.no_onnx:
            onnx_runner = OnnxRunner(runners[0].train_model.model, args.threads, onnx_dir)
            print(f"ONNX Runtime serving graph built and checked in {onnx_runner.export_s:.1f} s")
            runners.append(onnx_runner)
        predict = time_interleaved(runners, "predict", (predict_images,), args.repeats, args.warmup)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} threads"
    print(
        f"{args.variant} @ {args.size}px, {args.amp if args.amp != 'none' else 'fp32'}, {where}, "
        f"torch {torch.__version__}, median of {args.repeats} (after {args.warmup} warm-up), interleaved"
    )
    print(
        f"{'model':<18} {'train img/s (batch ' + str(args.train_batch) + ')':>24} "
        f"{'predict ms (batch ' + str(args.predict_batch) + ')':>24}"
    )
    results = {}
    for runner in runners:
        img_s = args.train_batch / statistics.median(train[runner.name]) if train.get(runner.name) else None
        latency = 1000 * statistics.median(predict[runner.name])
        results[runner.name] = (img_s, latency)
        shown = f"{img_s:>24.3f}" if img_s is not None else f"{'-':>24}"
        print(f"{runner.name:<18} {shown} {latency:>24.1f}")
    if "effdet" in results:
        (ours_ips, ours_ms), (ref_ips, ref_ms) = results["effdet_core"], results["effdet"]
        print(
            f"ratio ours/effdet: train throughput x{ours_ips / ref_ips:.3f} (higher is better), "
            f"predict latency x{ours_ms / ref_ms:.3f} (lower is better)"
        )
        print(f"train throughput ours/effdet: x{ours_ips / ref_ips:.3f}")
        print(f"predict latency ours(torch)/effdet: x{ours_ms / ref_ms:.3f}")
        if "ours(onnxruntime)" in results:
            print(f"predict latency ours(onnxruntime)/effdet: x{results['ours(onnxruntime)'][1] / ref_ms:.3f}")
    if device.type == "cuda":
        print(
            f"peak GPU memory (both models, train + predict): {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GB"
        )


if __name__ == "__main__":
    main()
