#!/usr/bin/env bash
# GPU check, one call of at most 8 minutes, the most important numbers first:
#   0. NVIDIA DALI unpacked from the pieces brought to the machine (../shared/gpu), if not there yet;
#   1. vit-s and vit-b: the SeFAR iteration at the paper's batch (8 labeled + 24 unlabeled, compiled)
#      against the reference style (TF32 off and on), its student step (overhead ratio), the host
#      operations per phase and host syncs, the student step's MFU (measured and datasheet peak);
#   2. 200 optimizer steps of a compiled `sefar train` on a clip store: how long the GPU waits for data;
#   3. then, as the budget allows: the kernel tests, DALI and NVDEC checks, the kernel benchmark, memory.
# A table of every number against its target comes last.
#
#   bash bench/gpu_check.sh                       # results into $OUT, default bench/results
#   OUT=/tmp/out BENCH_ARGS= bash bench/gpu_check.sh   # full repetitions (about 40 s more)
#
# Each part runs under its own timeout, cut further so the parts together stay inside
# GPU_CHECK_BUDGET seconds (default 470), and a part that fails or hangs does not stop the others.
# The package runs from this checkout (PYTHONPATH), NVIDIA DALI from /tmp/site. Result files
# are named timm-style, one per card and date: <card>-<date>-<what>.json; logs go to $OUT/logs/.
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
if [[ ":$PYTHONPATH:" != *":/tmp/site:"* ]]; then
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
unset TRITON_INTERPRET          # kernels run natively here
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET:-470}
RESERVE=20                      # kept back for the summary
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

# 0. DALI: the last piece (.gpu/c2, brought with this call) joins the others kept in /tmp/dl.
if ! $PY -c "import nvidia.dali" 2>/dev/null && [ -f .gpu/c2/install.sh ]; then
    part dali-install 90 bash .gpu/c2/install.sh
fi

# 1. What is here: the card and the libraries (quick).
part env 30 bash -c "nvidia-smi; $PY -m sefar_fast.bench.env"

# 2. The targets: iteration (reference TF32 off and on, student step), host overhead, model MFU.
# shellcheck disable=SC2086  # BENCH_ARGS holds several words on purpose
part bench-vit-s 130 "$PY" -m sefar_fast bench model iteration overhead --arch vit-s --device cuda $BENCH_ARGS \
    --json "$OUT/$STEM-bench-vit-s.json"
# shellcheck disable=SC2086
part bench-vit-b 150 "$PY" -m sefar_fast bench model iteration overhead --arch vit-b --device cuda $BENCH_ARGS \
    --json "$OUT/$STEM-bench-vit-b.json"

# 3. 200 optimizer steps of a compiled `sefar train` on a prepared store (256 x 340 JPEG frames, vit-s,
#    SeFAR from step 0, 8 labeled + 24 unlabeled clips per step): the share of time the GPU waits for data.
STORE=/tmp/sefar-gpu-check-store
RUN=/tmp/sefar-gpu-check-run
rm -rf "$RUN"
part train 150 bash -c "
    ( [ -f $STORE/index.json ] || $PY -m sefar_fast.bench.train_store $STORE --labeled 320 --unlabeled 96 --val 16 ) &&
    $PY -m sefar_fast train --data store:$STORE --arch vit-s --epochs 5 --batch-size 8 --device cuda \
        --out $RUN --json $OUT/$STEM-train.json method.warmup_epochs=0 optim.accum_steps=1 eval.views=1x1 \
        eval.every=5 run.log_every=10"
[ -f "$RUN/metrics.jsonl" ] && cp "$RUN/metrics.jsonl" "$LOGS/train-metrics.jsonl"

# 3b. What the temporal attention kernel adds: vit-b's student step with the torch path (SDPA, masked).
# shellcheck disable=SC2086
part model-vit-b-sdpa 70 env SEFAR_KERNELS=torch "$PY" -m sefar_fast bench model --arch vit-b --device cuda \
    $BENCH_ARGS --json "$OUT/$STEM-model-vit-b-sdpa.json"

# 4. As the budget allows: the kernel tests (interpreted and compiled), DALI's GPU decode and NVDEC
#    against the host decoders, the kernel benchmark, peak memory of vit-b.
shopt -s nullglob
KERNEL_TESTS=(tests/test_kernels_*.py tests/test_host_syncs.py)
shopt -u nullglob
part kernel-tests 90 "$PY" -m pytest -q -p no:cacheprovider --junitxml "$LOGS/kernel-tests.xml" "${KERNEL_TESTS[@]}"
part dali-check 45 "$PY" -c "
import json, sys
from sefar_fast.data.bench import check_dali_gpu
r = check_dali_gpu('cuda')
json.dump(r, open('$OUT/$STEM-dali-check.json', 'w'), indent=2)
print(r)
sys.exit(0 if r['ok'] else 1)"
part kernels-bench 60 "$PY" bench/kernels_bench.py "$OUT/$STEM-kernels.json" --device cuda
# shellcheck disable=SC2086
part memory-vit-b 60 "$PY" -m sefar_fast bench memory --arch vit-b --device cuda $BENCH_ARGS \
    --json "$OUT/$STEM-memory-vit-b.json"
part video-check 40 "$PY" -c "
import json, sys
from sefar_fast.data.bench import check_video_decode
r = {'check': check_video_decode('cuda')}
json.dump(r, open('$OUT/$STEM-video-check.json', 'w'), indent=2, default=str)
print(r)
sys.exit(0 if r['check'].get('ok') else 1)"

say "done in $(( $(date +%s) - START ))s; logs in $LOGS"
timeout 20 "$PY" -m sefar_fast.bench.summary "$OUT" "$STEM"
