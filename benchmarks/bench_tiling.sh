#!/usr/bin/env bash
# Training by windows on large images: the defaults (data.tiling: auto engages by itself) against the same run with
# data.tiling=off, the same optimizer steps, both scored on the full val images (sliced and merged for the tiled
# run). The untiled run scores up to 1,000 detections per image (eval.max_detections) so that COCO's 100 does not
# cap its recall on images with hundreds of objects. Run alone (2 heavy processes on 2 cores slow both). Usage:
#   bash benchmarks/bench_tiling.sh [STEPS] [OUT] [IMAGES] [SIZE]   # default 100 steps, outputs/tiling, 8 x 2048 px
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-100}
out=${2:-outputs/tiling}
images=${3:-8}
size=${4:-2048}
data="$out/data/aerial-$size"
mkdir -p "$out"
[ -f "$data/annotations/val.json" ] || .venv/bin/python run_pipeline.py data synth --preset aerial \
  --images "$images" --size "$size" --out "$data"
common=(--data "$data" --preset aerial --steps "$steps" --skip-effdet --set data.batch_size=4)
echo "== aerial $size px: defaults (tiling auto)"
.venv/bin/python benchmarks/bench_accuracy.py "${common[@]}" --out "$out/tiled" | tail -2
echo "== aerial $size px: data.tiling=off"
.venv/bin/python benchmarks/bench_accuracy.py "${common[@]}" --set data.tiling=off --set eval.max_detections=1000 \
  --out "$out/off" | tail -2
