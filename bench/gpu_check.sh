#!/usr/bin/env bash
# GPU check: every GPU test, `sefar bench` for vit-s, a short `sefar train` (how long the GPU
# waits for data), the kernel benchmark and `sefar bench` for vit-b, then a short table, last.
# Parts run in that order, so a spent budget cuts the last one.
#
#   bash bench/gpu_check.sh                       # results into $OUT, default bench/results
#   OUT=/tmp/out BENCH_ARGS= bash bench/gpu_check.sh   # full repetitions (about 40 s more)
#
# Made for one H100 and about 9 minutes (GPU_CHECK_BUDGET seconds, default 540): each part
# runs under its own timeout, cut further so the parts together stay inside the budget,
# and a part that fails or hangs does not stop the others. Installs nothing: the package
# runs from this checkout (PYTHONPATH), NVIDIA DALI from /tmp/site when it was brought
# there (see the GPU notes of the project). Result files are named timm-style, one per
# card and date: <card>-<date>-<what>.json; full logs go to $OUT/logs/.
set -u

cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
export OUT                      # a kernel benchmark may write there too
LOGS=$OUT/logs
PARTS=$LOGS/parts.tsv
: > "$PARTS"

# The checkout first (so this tree's sefar_fast wins), then DALI's bundle, then whatever was set.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d /tmp/site ] && [[ ":$PYTHONPATH:" != *":/tmp/site:"* ]]; then
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
unset TRITON_INTERPRET          # kernels run natively here
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET:-540}
RESERVE=25                      # kept back for the summary
START=$(date +%s)
BENCH_ARGS=${BENCH_ARGS---quick}  # medians of 5 (GPU timings vary little); set empty for 10

say() { echo "[gpu_check $(( $(date +%s) - START ))s] $*"; }

# part NAME CAP_SECONDS COMMAND...: run COMMAND under min(CAP, what the budget leaves),
# log to $LOGS/NAME.log, append "NAME<TAB>status<TAB>seconds" to parts.tsv.
part() {
    local name=$1 cap=$2
    shift 2
    local left=$(( BUDGET - RESERVE - ($(date +%s) - START) ))
    local limit=$(( cap < left ? cap : left ))
    if (( limit < 15 )); then
        printf '%s\t%s\t%s\n' "$name" "skipped: time budget spent" 0 >> "$PARTS"
        say "$name: skipped (time budget spent)"
        return
    fi
    local t0 rc status
    t0=$(date +%s)
    timeout --kill-after=15 "$limit" "$@" > "$LOGS/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124|137) status="timed out after ${limit}s" ;;
        *) status="failed (exit $rc)" ;;
    esac
    printf '%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - t0 ))" >> "$PARTS"
    say "$name: $status ($(( $(date +%s) - t0 ))s), log $LOGS/$name.log"
    if [ "$status" != ok ]; then tail -n 5 "$LOGS/$name.log" | sed 's/^/    /'; fi
}

STEM=$($PY -m sefar_fast.bench.env --stem 2>/dev/null) || STEM=""
if [ -z "$STEM" ]; then
    STEM="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 \
            | tr 'A-Z' 'a-z' | sed 's/[^a-z0-9]\+/-/g; s/^-//; s/-$//')-$(date -u +%F)"
fi
say "results: $OUT/$STEM-*.json"

# 1. What is here: the card, the libraries, whether DALI and the JPEG encoder import.
part env 60 bash -c "nvidia-smi; $PY -m sefar_fast.bench.env; $PY - <<'EOF'
import importlib
for name in ('nvidia.dali', 'PIL', 'triton', 'typer', 'rich', 'yaml', 'safetensors', 'pytest'):
    try:
        importlib.import_module(name)
        print(name, 'ok')
    except Exception as e:
        print(name, 'MISSING:', type(e).__name__, e)
EOF"

# 2. The kernel tests: the Triton kernels against their references under Triton's interpreter (a
#    child process each) and the ahead-of-time build for sm_90; the native kernels are compared
#    with their references by the kernel benchmark (part 6).
shopt -s nullglob
KERNEL_TESTS=(tests/test_kernels_*.py)
shopt -u nullglob
if (( ${#KERNEL_TESTS[@]} )); then
    part kernel-tests 120 "$PY" -m pytest -q -p no:cacheprovider --junitxml "$LOGS/kernel-tests.xml" \
        "${KERNEL_TESTS[@]}"
else
    printf '%s\t%s\t%s\n' kernel-tests "skipped: no tests/test_kernels_*.py" 0 >> "$PARTS"
fi

# 3. DALI's GPU decode (nvJPEG, "mixed") against the host decoder on the same batch.
part dali-check 90 "$PY" -c "
import json, sys
from sefar_fast.data.bench import check_dali_gpu
r = check_dali_gpu('cuda')
json.dump(r, open('$OUT/$STEM-dali-check.json', 'w'), indent=2)
print(r)
sys.exit(0 if r['ok'] else 1)"

# 3b. Direct video decode (NVDEC through DALI "mixed") against PyAV on the same batch, h264 and vp9.
#     Its throughput is in `sefar bench`'s data section (vit-s below). Needs PyAV on the machine.
part video-check 60 "$PY" -c "
import json, sys
from sefar_fast.data.bench import check_video_decode
r = {'check': check_video_decode('cuda')}
json.dump(r, open('$OUT/$STEM-video-check.json', 'w'), indent=2, default=str)
print(r)
sys.exit(0 if r['check'].get('ok') else 1)"

# 4. The benchmark for vit-s, 8 frames at 224 x 224, 8 labeled + 8 unlabeled clips per iteration,
#    with the data section (the loader and direct video; the same for every arch).
# shellcheck disable=SC2086  # BENCH_ARGS holds several words on purpose
part bench-vit-s 200 "$PY" -m sefar_fast bench --arch vit-s --device cuda $BENCH_ARGS \
    --json "$OUT/$STEM-bench-vit-s.json"

# 5. A short `sefar train` on a prepared store (256 x 340 JPEG frames, vit-s, compile on, SeFAR from
#    step 0, 8 labeled + 24 unlabeled clips per step): the fraction of step time spent waiting for data.
STORE=/tmp/sefar-gpu-check-store
RUN=/tmp/sefar-gpu-check-run
rm -rf "$RUN"
part train 150 bash -c "
    ( [ -f $STORE/index.json ] || $PY -m sefar_fast.bench.train_store $STORE --labeled 320 --unlabeled 96 --val 16 ) &&
    $PY -m sefar_fast train --data store:$STORE --arch vit-s --epochs 1 --batch-size 8 --device cuda \
        --out $RUN --json $OUT/$STEM-train.json method.warmup_epochs=0 eval.views=1x1 run.log_every=5"
[ -f "$RUN/metrics.jsonl" ] && cp "$RUN/metrics.jsonl" "$LOGS/train-metrics.jsonl"

# 6. The kernel benchmark (Triton kernels natively against their torch references: time and max |diff|), when the checkout has one.
if [ -f bench/kernels_bench.py ]; then
    KB_OUT=$OUT/$STEM-kernels.json
    if $PY bench/kernels_bench.py --help 2>/dev/null | grep -q -- "--json"; then
        part kernels-bench 90 "$PY" bench/kernels_bench.py --device cuda --json "$KB_OUT"
    else
        part kernels-bench 90 "$PY" bench/kernels_bench.py --device cuda "$KB_OUT"
    fi
else
    printf '%s\t%s\t%s\n' kernels-bench "skipped: no bench/kernels_bench.py" 0 >> "$PARTS"
fi

# 7. The benchmark for vit-b (its targets: 12x, 80 / 40 GB), without the data section measured above.
# shellcheck disable=SC2086
part bench-vit-b 200 "$PY" -m sefar_fast bench model iteration memory --arch vit-b --device cuda $BENCH_ARGS \
    --json "$OUT/$STEM-bench-vit-b.json"

say "done in $(( $(date +%s) - START ))s; logs in $LOGS"
timeout 60 "$PY" -m sefar_fast.bench.summary "$OUT" "$STEM"
