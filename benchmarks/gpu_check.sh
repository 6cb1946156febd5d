#!/usr/bin/env bash
# The one script that proves the GPU paths, unattended, on the first GPU machine at hand (about 6 minutes on one
# GPU). One "FIGURE" line per figure, one "FAIL" line per failure; exits non-zero on any failure.
#   1. pytest -m gpu: AMP fp16/bf16, the grad scaler, SyncBN in an NCCL group, channels_last, torch.compile, pinned
#      loader batches
#   2. D0 at 512 px, batch 16, AMP bf16 and fp16: train img/s of ours vs the reference effdet (same weights,
#      interleaved), predict latency at batch 1 and 8, peak GPU memory
#   3. the smoke and the main (default) configs through Ray Train with --use-gpu and amp auto: img/s, data-wait
#      share, peak GPU memory, final val AP; with 2+ GPUs also the smoke config on 2 DDP workers (NCCL + SyncBN)
#   4. a tune search with half a GPU per trial on one GPU: the two trials run side by side
#   5. the smoke model registered (ONNX graph and parity tags) and batch prediction over its images on the GPU
#   6. online serving (Ray Serve) with two replicas on half a GPU each: latency, requests/s, two alias moves
# Without CUDA it prints "no CUDA device: nothing to check" and exits 0.
#
#   benchmarks/gpu_check.sh            (outputs under a fresh temp dir; GPU_CHECK_OUT=DIR to keep them there)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "no CUDA device: nothing to check"
    exit 0
fi

OUT=${GPU_CHECK_OUT:-$(mktemp -d -t gpu_check.XXXXXX)}
mkdir -p "$OUT"
failures=0
figure() { echo "FIGURE $*"; }
fail() {
    echo "FAIL $*"
    failures=$((failures + 1))
}

# step NAME SECONDS COMMAND...: runs it with a time limit, its output in $OUT/NAME.log; prints its wall time
step() {
    local name=$1 limit=$2
    shift 2
    local log="$OUT/$name.log" start rc
    start=$(date +%s)
    echo "== $name: $*"
    timeout "$limit" "$@" >"$log" 2>&1
    rc=$?
    figure "$name wall_s: $(($(date +%s) - start))"
    if [ "$rc" -ne 0 ]; then
        fail "$name (exit $rc; last lines of $log below)"
        tail -n 25 "$log" | sed 's/^/    /'
    fi
    return "$rc"
}

# the last progress line of a training log, without Ray's prefixes and colours
last_step_line() { sed 's/\x1b\[[0-9;]*m//g' "$1" | grep -o 'step [0-9]*/[0-9]* .*' | tail -n 1; }

report_training() {
    local name=$1 log="$OUT/$1.log" line
    line=$(last_step_line "$log")
    figure "$name img/s: $(grep -o '[0-9.]* img/s' <<<"$line" | head -n 1 | cut -d' ' -f1)"
    figure "$name data_wait: $(grep -o 'data wait [0-9]*%' <<<"$line" | cut -d' ' -f3)"
    figure "$name peak_gpu_mem_gb: $(grep -o 'GPU mem [0-9.]* GB' <<<"$line" | cut -d' ' -f3)"
    figure "$name final: $(grep -o 'val AP [0-9.]*, AP50 [0-9.]*' "$log" | tail -n 1)"
    figure "$name device: $(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -o 'worker: .*' | head -n 1)"
}

GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
CPUS=$(nproc)
figure "gpu: $("$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.name}, {p.total_memory / 2**30:.0f} GiB')") x $GPUS; $CPUS CPUs; torch $("$PY" -c 'import torch; print(torch.__version__)')"

# 1. the CUDA-only tests
if step pytest_gpu 900 "$PY" -m pytest -m gpu -q -p no:cacheprovider -rs tests; then
    figure "pytest_gpu: $(grep -Eo '[0-9]+ passed' "$OUT/pytest_gpu.log" | tail -n 1)"
fi
grep -q "skipped" "$OUT/pytest_gpu.log" && fail "pytest_gpu: some gpu test skipped on a CUDA machine"

# 2. the model alone, ours vs effdet
for amp in bf16 fp16; do
    for predict_batch in 1 8; do
        name="bench_d0_512_${amp}_p${predict_batch}"
        if step "$name" 600 "$PY" benchmarks/bench_model.py --device cuda --amp "$amp" --variant d0 --size 512 \
            --train-batch 16 --predict-batch "$predict_batch" --repeats 10 --warmup 3; then
            grep -E '^(effdet|ratio|peak)' "$OUT/$name.log" | sed "s/^/FIGURE $name: /"
        fi
    done
done

# 3. through Ray Train, as a user runs it
common=(--set "mlflow.tracking_uri=sqlite:///$OUT/mlflow.db" --set "ray.storage_path=$OUT/ray_results")
loader_cpus=$((CPUS / GPUS > 8 ? 8 : CPUS / GPUS))
step train_smoke 600 "$PY" run_pipeline.py train --config configs/smoke.yaml --use-gpu --num-workers 1 \
    --set "ray.cpus_per_worker=$loader_cpus" --set "train.output_dir=$OUT/smoke" "${common[@]}" \
    && report_training train_smoke
step train_main 900 "$PY" run_pipeline.py train --use-gpu --num-workers 1 --set "ray.cpus_per_worker=$loader_cpus" \
    --set "train.output_dir=$OUT/main" "${common[@]}" && report_training train_main
if [ "$GPUS" -ge 2 ]; then
    step train_smoke_ddp2 600 "$PY" run_pipeline.py train --config configs/smoke.yaml --use-gpu --num-workers 2 \
        --set "ray.cpus_per_worker=$((loader_cpus / 2 > 1 ? loader_cpus / 2 : 2))" \
        --set "train.output_dir=$OUT/smoke_ddp2" "${common[@]}" && report_training train_smoke_ddp2
    grep -q "SyncBN" "$OUT/train_smoke_ddp2.log" || fail "train_smoke_ddp2: the workers did not run SyncBN"
else
    figure "train_smoke_ddp2: one GPU here, DDP over NCCL not run"
fi

# 4. two trials side by side on one GPU
printf 'space:\n  optim.lr: {grid: [0.64, 0.32]}\n' >"$OUT/space.yaml"
if step tune_half_gpu 900 "$PY" run_pipeline.py tune --config configs/smoke.yaml --space "$OUT/space.yaml" \
    --num-samples 1 --max-epochs 2 --workers-per-trial 1 --use-gpu --no-register --name gpu-check \
    --set ray.gpus_per_worker=0.5 --set "ray.cpus_per_worker=$((loader_cpus / 2 > 1 ? loader_cpus / 2 : 2))" \
    --set "train.output_dir=$OUT/tune" "${common[@]}"; then
    if grep -q "2 RUNNING" "$OUT/tune_half_gpu.log"; then
        figure "tune_half_gpu: 2 trials ran side by side on one GPU"
    else
        fail "tune_half_gpu: the trials never ran at the same time"
    fi
    figure "tune_half_gpu leaderboard: $(grep -A3 '^rank' "$OUT/tune_half_gpu.log" | tr -s ' ' | tr '\n' '|')"
fi

# 5. the smoke model registered (with its ONNX Runtime graph) and batch prediction of its images on the GPU (PyTorch
#    on CUDA: the onnxruntime wheel is CPU-only unless onnxruntime-gpu is installed)
best=$(sed 's/\x1b\[[0-9;]*m//g' "$OUT/train_smoke.log" | grep -o 'best checkpoint: .*' | tail -n 1 | cut -d' ' -f3)
data=$("$PY" -c "from pipeline.config import load_config; print(load_config('configs/smoke.yaml', []).data.dir)")
if [ -n "$best" ] && step register_smoke 300 "$PY" run_pipeline.py registry register "$best" gpu-check \
    --data "$data" --tracking-uri "sqlite:///$OUT/mlflow.db"; then
    figure "register_smoke: $(grep -o 'registered .*' "$OUT/register_smoke.log" | tail -n 1)"
    step batch_predict_gpu 600 "$PY" run_pipeline.py predict --model gpu-check@champion "$data/images" \
        --out "$OUT/predictions" --num-workers 1 --use-gpu --cpus-per-worker 4 \
        --tracking-uri "sqlite:///$OUT/mlflow.db" &&
        figure "batch_predict_gpu: $(grep -o 'detections in .*' "$OUT/batch_predict_gpu.log" | tail -n 1)"
else
    fail "register_smoke: no best checkpoint in train_smoke's log, or registration failed"
fi

# 6. online serving on the GPU: two Ray Serve replicas sharing it (half a GPU each), under load and two alias moves
if step serve_half_gpu 600 "$PY" benchmarks/bench_serve.py --use-gpu --replicas 2 --gpus-per-replica 0.5 \
    --size 512 --clients 16 --seconds 20 --skip-mlflow; then
    grep "^ours" "$OUT/serve_half_gpu.log" | while read -r line; do figure "serve_half_gpu: $line"; done
    if grep "^ours" "$OUT/serve_half_gpu.log" | grep -Eq "errors [1-9]"; then
        fail "serve_half_gpu: requests failed under load"
    fi
fi

echo "outputs and logs: $OUT"
if [ "$failures" -gt 0 ]; then
    echo "gpu_check: $failures failure(s)"
    exit 1
fi
echo "gpu_check: all passed"
