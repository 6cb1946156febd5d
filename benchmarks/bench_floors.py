"""The accuracy floors' runs (tests/accuracy), with their figures printed: val AP / AP50 of seeded short runs of the
project's defaults (plain loop, one process, 2 threads) on the shapes and dense synthetic sets, per seed.

The floor tests only say pass or fail; a model, recipe, data or evaluation change quotes these figures before and
after. Runs are deterministic on one machine (float rounding differs between CPUs):

    python benchmarks/bench_floors.py                       # both sets, seed 0 (as the tests)
    python benchmarks/bench_floors.py --sets dense --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from pipeline.config import load_config
from pipeline.data import write_synthetic_dataset
from pipeline.training.loop import fit

# name -> (generator preset, images, size, optimizer steps, batch): tests/accuracy/test_accuracy_floors.py's settings
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "accuracy"))
from test_accuracy_floors import RUNS as SETS  # noqa: E402  (after the path)
from test_accuracy_floors import run_overrides  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=list(SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = parser.parse_args()
    torch.set_num_threads(2)
    root = Path(tempfile.mkdtemp(prefix="bench-floors-"))
    for name in args.sets:
        preset, images, size, steps, batch = SETS[name]
        data = write_synthetic_dataset(root / name, num_images=images, size=size, seed=7, preset=preset)
        for seed in args.seeds:
            overrides = run_overrides(data, size, steps, batch, seed)
            torch.manual_seed(seed)
            start = time.time()
            metrics = fit(load_config(None, overrides), root / f"{name}-{seed}").best.metrics
            print(
                f"{name} seed {seed}: val AP {metrics['val_AP']:.4f} AP50 {metrics['val_AP50']:.4f} "
                f"({steps} steps, {time.time() - start:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
