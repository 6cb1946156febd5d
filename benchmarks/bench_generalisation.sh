#!/usr/bin/env bash
# The defaults on the three generated sets (demo shapes, dense small objects, overhead scene), each against the
# defaults before auto fitting and against the reference effdet, all under one train.minutes budget per set.
# Run alone (2 heavy processes on 2 cores slow both many times over). Usage:
#   bash benchmarks/bench_generalisation.sh [MINUTES] [OUT]     # default 4 minutes, outputs/generalisation
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-4}
out=${2:-outputs/generalisation}
mkdir -p "$out"
for set in ${SETS:-dense:384 overhead:512 shapes:256}; do
  preset=${set%%:*}
  data="$out/data/$preset"
  common=(--data "$data" --preset "$preset" --images 300 --minutes "$minutes")
  echo "== $preset: defaults, then effdet with the same training seconds"
  .venv/bin/python benchmarks/bench_accuracy.py "${common[@]}" --out "$out/$preset-new" | tail -4
  echo "== $preset: old defaults (256 px, official levels and anchors, default augmentation)"
  .venv/bin/python benchmarks/bench_accuracy.py "${common[@]}" --old-defaults --skip-effdet --out "$out/$preset-old" | tail -2
done
