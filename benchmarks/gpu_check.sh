#!/usr/bin/env bash
# One GPU, one short run: every CUDA figure this project is missing (benchmarks/README.md,
# "gpu_check.sh"). At most about 8 minutes: each step has its own time limit, and a step that
# fails or runs out of time is reported as such while the others still run.
#
#   bash benchmarks/gpu_check.sh [REPORT.md]     # default: $OUT/gpu_check_report.md if $OUT is
#                                                # set (the lent device's return folder), else
#                                                # benchmarks/gpu_check_report.md
# Environment: PYTHON (default: python), TINY_ROOT (tinyimagenet100_lt for the 224-px loader
# step; default data/tinyimagenet100_lt, then ../shared/data/tinyimagenet100_lt; without it
# the step uses the synthetic data set at 224 px), STEP_SCALE (multiplies every time limit).
set -u
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-python}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
SCALE=${STEP_SCALE:-1}

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "error: no CUDA device visible (torch.cuda.is_available() is False): gpu_check.sh measures a GPU and has nothing to do here; run it on a machine with one GPU" >&2
    exit 2
fi

REPORT=${1:-${OUT:+$OUT/gpu_check_report.md}}
REPORT=${REPORT:-benchmarks/gpu_check_report.md}
mkdir -p "$(dirname "$REPORT")"
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
START=$(date +%s)

TINY=${TINY_ROOT:-}
for cand in data/tinyimagenet100_lt ../shared/data/tinyimagenet100_lt; do
    [ -z "$TINY" ] && [ -f "$cand/train.txt" ] && TINY=$cand
done

{
    echo "# gpu_check report"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    "$PY" - <<'EOF'
import os, torch
p = torch.cuda.get_device_properties(0)
print(f"- device: {torch.cuda.get_device_name(0)} ({p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, "
      f"capability {p.major}.{p.minor}); bf16: {torch.cuda.is_bf16_supported()}; CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}, torch {torch.__version__}; CPUs: {os.cpu_count()}")
EOF
    echo
} > "$REPORT"

HEADLINES=()

# step NAME LIMIT_SECONDS COMMAND...: run with a time limit, keep the output in the report,
# remember the output's last line (every benchmark prints its ratio last).
step() {
    local name=$1 limit=$2
    shift 2
    limit=$(awk -v l="$limit" -v s="$SCALE" 'BEGIN { printf "%d", l * s }')
    local log="$LOGS/$name.log" t0 rc status last
    echo ">>> $name (limit ${limit} s): $*" >&2
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
    rc=$?
    case $rc in
        0) status="ok" ;;
        124|137) status="TIMED OUT after ${limit} s" ;;
        *) status="FAILED (exit $rc)" ;;
    esac
    last=$(grep -v '^\s*$' "$log" | tail -n 1)
    {
        echo "## $name: $status, $(( $(date +%s) - t0 )) s"
        echo
        echo '```'
        echo "\$ $*"
        grep -v -E '^\s*$| INFO |Warning|warn\(' "$log" | tail -n 40
        echo '```'
        echo
    } >> "$REPORT"
    HEADLINES+=("$name [$status]: $last")
}

# 1. The CUDA tests (DGR on synthetic 32x32 ResNet-32 fp32/bf16 compiled, reproducibility,
#    checkpoint CUDA -> CPU -> CUDA, tensor pipeline on the device, packing 4 trials at gpu 0.25).
step cuda_tests 180 "$PY" -m pytest -m cuda tests/cuda -q -rs -p no:cacheprovider
# 2. DGR's per-step cost on the GPU (100 and 1000 classes).
step dgr_step 60 "$PY" benchmarks/dgr_step.py --device cuda --threads 0 --rounds 6 --head-rounds 100
# 3. fp32 vs bf16 autocast + channels-last, full CIFAR-100-LT-sized epoch (ResNet-32, tensor pipeline).
step epoch_precision 60 "$PY" benchmarks/epoch_throughput.py --device cuda --compare precision --epochs-fraction 1 --rounds 3 --threads 0
# 4. Tensor-resident pipeline vs DataLoader on the GPU, full epoch, the learner's CUDA execution.
step epoch_pipeline 40 "$PY" benchmarks/epoch_throughput.py --device cuda --compare pipeline --epochs-fraction 1 --rounds 3 --threads 0 --amp --channels-last
# 5. Packing: 4 short 32x32 trials at gpu 0.25 (at once) vs gpu 1 (in turn), through the orchestrator CLI.
step packing 80 "$PY" benchmarks/sweep_overhead.py --pack-gpu --pack-epochs 2 --rounds 1
# 6. ResNet-18 at 224 px on the loader pipeline, 2 epochs (images per second per epoch from log.jsonl).
if [ -n "$TINY" ]; then
    R18=(tinyimagenet100_lt finetune lt 100 1 --data-root "$TINY")
else
    R18=(synthetic finetune lt 20 1)
fi
step resnet18_224_loader 60 "$PY" benchmarks/run_epochs.py -- "${R18[@]}" --device cuda --epochs 2 \
    --set backbone=resnet18 --set image_size=224 --set pipeline=loader --set checkpoint=false \
    --set amp=true --set channels_last=true

{
    echo "## Headlines (the last line of each step)"
    echo
    for h in "${HEADLINES[@]}"; do echo "- $h"; done
    echo
    echo "Total: $(( $(date +%s) - START )) s. Calibrate cil_core/cost_model.py from the figures above (README \"Cost model\")."
} >> "$REPORT"

echo
echo "report: $REPORT"
for h in "${HEADLINES[@]}"; do echo "$h"; done
