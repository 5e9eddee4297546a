#!/usr/bin/env bash
# The paper's own interface, verbatim:
#   bash script/main.sh <dataset> <approach> <gpu> <scenario> <initial_classes> <total_tasks> [extra options]
# e.g. bash script/main.sh cifar100 DGR 0 lt 5 20
# A thin wrapper over `python -m cil_core DATASET APPROACH SCENARIO INITIAL_CLASSES TOTAL_TASKS --gpu GPU`.
set -euo pipefail
if [ "$#" -lt 6 ]; then
  echo "usage: bash script/main.sh <dataset> <approach> <gpu> <scenario> <initial_classes> <total_tasks> [options]" >&2
  exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python}"
if [ -x "$here/.venv/bin/python" ] && [ -z "${PYTHON:-}" ]; then python="$here/.venv/bin/python"; fi
dataset="$1"; approach="$2"; gpu="$3"; scenario="$4"; initial="$5"; tasks="$6"; shift 6
cd "$here"
exec "$python" -m cil_core "$dataset" "$approach" "$scenario" "$initial" "$tasks" --gpu "$gpu" "$@"
