#!/usr/bin/env bash
# The synth method comparison (bench/synth_results.py) on the lent GPU, all runs side by side.
#
#   bash bench/gpu_synth_results.sh start [COMMON ARGS...]   # launch, then watch until done or WATCH_S
#   bash bench/gpu_synth_results.sh watch                    # a later call on the same warm machine
#   bash bench/gpu_synth_results.sh stop                     # end the runs (to free the GPU), pack them
#
# The runs outlive one device call (they start in their own process session), so a second
# `watch` call within the machine's warm window picks them up. Each call ends by packing every
# finished and unfinished run's result and metrics into $OUT/synth-runs.tar.gz (the device
# brings back only a few files). Seed 0 of each row starts first and compiles; the other seeds
# start STAGGER_S later and reuse its compiled kernels from inductor's cache.
#
# Measured on an H200 (2026-11-28), nine runs of 300 epochs side by side: the supervised rows end
# in about 520 s, but SeFAR's semi-supervised epochs take about 5 s each (2.4 steps/s per run): at
# that rate a 180-epoch semi-supervised phase takes 15 minutes, a whole session's device time.
#
# Env: ROWS (default "sefar supervised supervised100"), SEEDS (default "0 1 2"),
#      RUNS (default /tmp/synth-runs), WATCH_S (default 540), STAGGER_S (default 60).
set -u
cd "$(dirname "$0")/.."
mode=${1:-watch}
shift || true
OUT=${OUT:-/tmp/out}
RUNS=${RUNS:-/tmp/synth-runs}
ROWS=${ROWS:-sefar supervised supervised100}
SEEDS=${SEEDS:-0 1 2}
WATCH_S=${WATCH_S:-540}
STAGGER_S=${STAGGER_S:-60}
START=$(date +%s)
mkdir -p "$OUT" "$RUNS"

# The package from this checkout (the driver runs `python -m sefar_fast`).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SEFAR_CACHE=${SEFAR_CACHE:-/tmp/sefar-cache}
export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-2}  # nine compiles share 16 cores
unset TRITON_INTERPRET

n_seeds=$(wc -w <<< "$SEEDS")
n_rows=$(wc -w <<< "$ROWS")

if [ "$mode" = start ]; then
    printf '%s\n' "$@" > "$RUNS/common.args"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$RUNS/card.txt" 2>&1
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" >> "$RUNS/card.txt"
    python3 -c "from sefar_fast.data.synth import ensure_synth; print(ensure_synth())"  # once, not nine times
    first=${SEEDS%% *}
    rest=${SEEDS#"$first"}
    # shellcheck disable=SC2086  # ROWS and SEEDS are word lists
    setsid nohup python3 bench/synth_results.py --rows $ROWS --seeds "$first" --jobs "$n_rows" --out "$RUNS" \
        -- "$@" > "$RUNS/driver-first.log" 2>&1 < /dev/null &
    if [ -n "${rest// /}" ]; then
        sleep "$STAGGER_S"
        # shellcheck disable=SC2086
        setsid nohup python3 bench/synth_results.py --rows $ROWS --seeds $rest \
            --jobs $(( n_rows * (n_seeds - 1) )) --out "$RUNS" -- "$@" > "$RUNS/driver-rest.log" 2>&1 < /dev/null &
    fi
fi

if [ "$mode" = stop ]; then
    # Bracketed first letters: the patterns must not match this script's own command line.
    pkill -f "[b]ench/synth_results.py"
    pkill -f "[s]efar_fast train .*--out $RUNS/"
    sleep 3
    WATCH_S=0
fi

# Watch: one line per run every 30 s (epoch reached, latest val top-1), until all are done.
total=$(( n_rows * n_seeds ))
while :; do
    done_n=$(find "$RUNS" -name result.json | wc -l)
    echo "[$(( $(date +%s) - START ))s] $done_n/$total finished"
    for m in "$RUNS"/*/seed*/metrics.jsonl; do
        [ -f "$m" ] || continue
        python3 - "$m" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
last = rows[-1] if rows else {}
top1 = next((r.get("val_top1") for r in reversed(rows) if r.get("val_top1") is not None), None)
name = "/".join(sys.argv[1].split("/")[-3:-1])
print(f"  {name}: epoch {last.get('epoch')} val_top1 {top1}")
EOF
    done
    (( done_n >= total )) && break
    pgrep -f bench/synth_results.py > /dev/null || { echo "no driver running: see $RUNS/driver-*.log"; tail -3 "$RUNS"/driver-*.log; break; }
    (( $(date +%s) - START >= WATCH_S )) && break
    sleep 30
done
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
tar -czf "$OUT/synth-runs.tar.gz" -C "$RUNS" --exclude='*.safetensors' --exclude='*.state' --exclude='*.png' .
ls -la "$OUT"
