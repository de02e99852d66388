#!/usr/bin/env bash
# GPU checks (issues 7 and 8), one script, under 8 minutes on one H200-class GPU:
#  1. synthesise the full 50,000-image training set (+5,000 test) on the machine's CPUs;
#  2. the three recipes (seed, winner, default) for the same few minutes each on one GPU:
#     samples/s and test label accuracy at the end of the budget (bench/accuracy.py);
#  3. synthetic-pretrained vs random init for the same minutes on the full 256 px task.
# Usage: bash bench/gpu.sh [MINUTES_PER_RECIPE]   (output: bench/out/gpu/*.md, printed too)
set -euo pipefail
cd "$(dirname "$0")/.."
MIN=${1:-1.5}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-bench/out/gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
# 1+2: equal-budget study on the full-size synthetic set
$PY bench/accuracy.py --minutes "$MIN" --train 50000 --test 5000 --out "$OUT/accuracy" \
    --set seed:num_workers=8 --set winner:num_workers=8
# (default keeps num_workers 0: its generated pools live in the main process, docs/learning.md)
# 3: pretrained vs random init, same budget, full 256 px task
$PY -m dirtymnist pretrain "$OUT/pretrained.safetensors" --minutes 1 --preset default
$PY bench/accuracy.py --minutes "$MIN" --train 50000 --test 5000 --out "$OUT/accuracy" \
    --recipes default --set "default:pretrained=$OUT/pretrained.safetensors" --tag pretrained
cat "$OUT"/accuracy/*.md
