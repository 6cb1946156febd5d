"""Sliced prediction of one large image: time and peak memory of `Detector.predict` by windows.

A random-weight Lite0 (the speed and memory do not depend on the weights) at its official 320 px input predicts a
WIDTH x HEIGHT image by 320 px windows (overlap 0.2) plus the whole-image pass, in batches of 8 windows. Prints
the windows, seconds, detections after the merge and the process's peak resident memory before and after:

    python benchmarks/bench_slicing.py                 # 6000 x 4000
    python benchmarks/bench_slicing.py --width 12000 --height 8000
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from effdet_core import PostprocessConfig, create_model  # noqa: E402  (after the path)
from pipeline.config.tiling import TilingSpec  # noqa: E402
from pipeline.data import LabelMap  # noqa: E402
from pipeline.data.tiling import tile_windows  # noqa: E402
from pipeline.registry.package import ModelPackage  # noqa: E402
from pipeline.registry.predict import Detector  # noqa: E402


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    labels = LabelMap.from_categories([{"id": 1, "name": "object"}])
    package = ModelPackage(create_model("lite0", 1, pretrained_backbone=None).eval(), labels, PostprocessConfig())
    detector = Detector(package, batch_size=8, backend="torch").with_tiling(TilingSpec(320, 0.2))
    image = np.random.default_rng(0).integers(0, 255, (args.height, args.width, 3), np.uint8)
    before = peak_mib()
    start = time.perf_counter()
    detections = detector.predict([image])
    seconds = time.perf_counter() - start
    windows = len(tile_windows(args.height, args.width, detector.tiling)) + 1
    print(
        f"{args.width} x {args.height} px ({image.nbytes / 2**20:.0f} MiB decoded): {windows} passes "
        f"(320 px windows, overlap 0.2, + the whole image) in {seconds:.1f} s ({windows / seconds:.1f}/s), "
        f"{len(detections)} detections after the merge; peak RSS {before:.0f} MiB before, {peak_mib():.0f} MiB after"
    )


if __name__ == "__main__":
    main()
