#!/usr/bin/env bash
# One device call of the GPU study (README.md "On one GPU"), as a session lent a GPU runs it.
# First, here: `bash benchmarks/gpu/bundle.sh`. Then each device call (carry [".gpu"], timeout_s 600):
#
#   bash benchmarks/gpu/session.sh STEP...
#
# Steps, run in the order given, each skipped when too little of BUDGET is left:
#   check     versions, the card, and the CUDA tests (pytest -m gpu tests/test_gpu.py)
#   bench     benchmarks/concurrent_tune.py: sequential vs concurrent tuning at the study's full
#             protocol (20 trials, <= 50 epochs, patience 5) of each of BENCH_MODELS (default: resnet18)
#   seedloop  benchmarks/seed_loop.py: the study's loop vs ours on cnn and resnet18, tune stage
#             (trials 4 at a time included) and final training
#   paper     the study with the reported hyperparameters (config/gpu-paper.yaml)
#   tuned     the whole study tuned (config/gpu-paper.yaml + config/gpu-tuned.yaml)
# STUDY_TARGETS (optional): what `paper` and `tuned` build instead of the whole study, e.g.
#   STUDY_TARGETS=results/cifar10_jpeg/eval/acgan/seed3407/metrics.json   (one model's row)
#
# `paper` and `tuned` run Snakemake in the background (its own process session), so a run
# longer than one call goes on while the machine stays warm: call again with the same step at
# once (the machine is given back 30 s after a call) and it waits for that run, or, on a fresh
# machine, starts it again. When a study finishes, its STEP.txt ends with the line
#   Whole tuned study, measured: M min S s on one <device> (set-up X s, Snakemake Y s)
# the set-up (wheels and data) of the machine's first call plus Snakemake's run to the report;
# steps run before it in the same call (check, seedloop) do not count.
# Every call ends by packing the outputs into $OUT (results.tgz, timings.md,
# snakemake-STEP.log, one STEP.txt per step, and gpu-util.csv: nvidia-smi's utilisation and
# memory every 2 s over the call, summed up at the end of the output).
#
# BUDGET: seconds this call may take (default 560, under the device's 600 s limit).
# STATE: where the background studies keep their logs and stamps (default /tmp/reprozoo-session).
# Rehearsal on CPU (small): OUT=/tmp/o DEVICE=cpu DATASET=digits PAPER_CONFIGS=config/demo.yaml \
#     BENCH_MODELS=mlp SEEDLOOP_ARGS='--models mlp --images 640 --epochs 1 --trials 2' \
#     PATH=$PWD/.venv/bin:$PATH bash benchmarks/gpu/session.sh check bench seedloop paper
set -uo pipefail
cd "$(dirname "$0")/../.."
BUDGET=${BUDGET:-560}
OUT=${OUT:?OUT must name the output folder (the device tool sets it)}
BENCH_MODELS=${BENCH_MODELS:-resnet18}
PAPER_CONFIGS=${PAPER_CONFIGS:-config/gpu-paper.yaml}
TUNED_CONFIGS=${TUNED_CONFIGS:-config/gpu-paper.yaml config/gpu-tuned.yaml}
DATASET=${DATASET:-cifar10_jpeg}
CORES=${CORES:-$(nproc)}
DEVICE=${DEVICE:-cuda}   # cpu: a rehearsal on a machine without a GPU (bench and seedloop)
GPU_JOBS=${GPU_JOBS:-3}   # GPU jobs at a time on the card; each tune job runs its trials
                          # REPROZOO_TUNE_WORKERS at a time (reprozoo/trials.py; 4 on a GPU when unset)

left() { echo $((BUDGET - SECONDS)); }
say() { echo "[session $(date -u +%H:%M:%S) +${SECONDS}s] $*"; }
# What outlives a call on a warm machine: the background studies' logs and stamps, and the
# seconds the machine's first call spent on set-up.
STATE=${STATE:-/tmp/reprozoo-session}
mkdir -p "$STATE"
if command -v nvidia-smi >/dev/null; then
    DEVICE_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
else
    DEVICE_NAME="CPU ($(nproc) cores)"
fi

# ---------------------------------------------------------------- setup (kept on a warm machine)
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
if ! python3 -c "import snakemake, hyperopt" 2>/dev/null; then
    if [ ! -d /tmp/site/snakemake ]; then
        [ -d .gpu/whl ] || { echo "session: no .gpu/whl: run benchmarks/gpu/bundle.sh here and carry .gpu" >&2; exit 2; }
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .gpu/whl/*.whl || exit 2
    fi
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH
    python3 -c "import snakemake.cli, hyperopt" || {
        echo "session: snakemake or hyperopt does not import from the carried wheels (above: the missing" \
             "module; add it to bundle.sh, which leaves out what KINDS.md lists as on the device)" >&2; exit 2; }
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
command -v python >/dev/null || ln -s "$(command -v python3)" /usr/local/bin/python
if [ ! -d resources/cifar10-jpeg ] && [ -f .gpu/cifar10-jpeg.tar.gz ]; then
    mkdir -p resources && tar xzf .gpu/cifar10-jpeg.tar.gz -C resources
fi
[ -f "$STATE/setup-seconds" ] || echo "$SECONDS" > "$STATE/setup-seconds"

# ---------------------------------------------------------------- steps
data() {  # the prepared arrays the benchmarks read (the pipeline's own prepare job)
    [ -f "results/$DATASET/data.npz" ] || timeout "$(left)" snakemake "results/$DATASET/data.npz" \
        --cores "$CORES" --configfile $PAPER_CONFIGS > "$OUT/prepare.log" 2>&1
}

check() {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, torchvision, snakemake, hyperopt; print('torch', torch.__version__, \
'torchvision', torchvision.__version__, 'snakemake', snakemake.__version__, 'hyperopt', hyperopt.__version__)"
    timeout "$(( $(left) < 240 ? $(left) : 240 ))" python3 -m pytest -q -m gpu -p no:cacheprovider -rs tests/test_gpu.py
}

bench() {
    data || return
    for model in $BENCH_MODELS; do
        timeout "$(left)" python3 benchmarks/concurrent_tune.py --model "$model" --trials 20 --epochs 50 \
            --patience 5 --workers 4 --device "$DEVICE" --data "results/$DATASET/data.npz"
    done
}

seedloop() {
    timeout "$(left)" python3 benchmarks/seed_loop.py ${SEEDLOOP_ARGS:---models cnn resnet18 --images 50000 \
        --test-images 5000 --trials 8 --epochs 2} --workers 4 --device "$DEVICE"
}

study() {  # $1: a name for the run; the rest: config files
    local name=$1; shift
    local done=$STATE/smk-$name.done pid=$STATE/smk-$name.pid log=$STATE/smk-$name.log
    if [ "$(cat "$done" 2>/dev/null)" = 0 ]; then
        say "the $name study finished in an earlier call on this machine"
    elif ! { [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null; }; then
        # not running: (re)start it; Snakemake skips what an earlier run of this call finished
        rm -f "$done"
        say "starting the $name study"
        date +%s > "$STATE/smk-$name.start"
        setsid nohup bash -c "(time snakemake ${STUDY_TARGETS:-} --cores $CORES --profile profiles/gpu --resources gpu=$GPU_JOBS \
            --keep-going --rerun-incomplete --configfile $*) > '$log' 2>&1; echo \$? > '$done'" \
            >/dev/null 2>&1 &
        echo $! > "$pid"
    fi
    while [ ! -f "$done" ] && [ "$(left)" -gt 45 ]; do sleep 1; done
    cp "$log" "$OUT/snakemake-$name.log" 2>/dev/null
    if [ -f "$done" ]; then say "$name study finished, exit $(cat "$done")"
    else say "$name study still running: call again with the same step"; fi
    if [ "$(cat "$done" 2>/dev/null)" = 0 ]; then
        local setup run
        setup=$(cat "$STATE/setup-seconds") run=$(($(stat -c %Y "$done") - $(cat "$STATE/smk-$name.start")))
        echo "Whole $name study, measured: $(((setup + run) / 60)) min $(((setup + run) % 60)) s on one" \
             "$DEVICE_NAME (set-up $setup s, Snakemake $run s)"
    fi
    grep -c "Finished jobid" "$log" 2>/dev/null | sed 's/^/finished jobs: /'
    grep -A2 "^Error in rule" "$log" 2>/dev/null | head -20
    [ -f "$done" ] && return "$(cat "$done")"   # snakemake's exit; still running: 3
    return 3
}
paper() { study paper $PAPER_CONFIGS; }
tuned() { study tuned $TUNED_CONFIGS; }

collect() {
    tar czf "$OUT/results.tgz" --ignore-failed-read results/*/report results/*/tune \
        results/*/train/*/seed*/run.json results/*/train/*/seed*/history.csv results/*/eval logs 2>/dev/null
    python3 benchmarks/study_timings.py --dataset "$DATASET" > "$OUT/timings.md" 2>&1 || true
}

for step in "$@"; do
    case $step in check|bench|seedloop|paper|tuned) ;; *)
        echo "session: unknown step '$step' (steps: check bench seedloop paper tuned)" >&2; exit 2;; esac
done
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -l 2 \
        > "$OUT/gpu-util.csv" 2>/dev/null &
    SAMPLER=$!
fi
for step in "$@"; do
    if [ "$(left)" -lt 60 ]; then say "skipped $step: $(left) s of BUDGET left"; continue; fi
    say "$step"
    $step 2>&1 | tee "$OUT/$step.txt"
    say "$step: exit ${PIPESTATUS[0]}"
done
collect
if [ -n "${SAMPLER:-}" ]; then
    kill "$SAMPLER" 2>/dev/null
    awk -F', *' '$2 ~ /^[0-9]+$/ {n++; sum += $2; if ($2 > most) most = $2; if ($3 > memory) memory = $3}
        END {if (n) printf "GPU utilisation over this call (%d samples, every 2 s): mean %.0f%%, max %d%%; " \
             "memory used at most %d MiB\n", n, sum / n, most, memory}' "$OUT/gpu-util.csv" | tee -a "$OUT/timings.md"
fi
say "done"
