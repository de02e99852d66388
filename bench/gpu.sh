#!/usr/bin/env bash
# GPU checks, one script, under 8 minutes on one H200-class GPU (no network there: random weights).
#  1. samples/s and peak memory of `seed` (B7, 331 px, batch 8), `winner` (B8, 256 px, batch 16)
#     and `gpu` (ConvNeXt-T at stride 16, batch 32) in fp32 / fp16 / bf16, and the 9th-place
#     team's per-sample PIL + DataLoader pipeline feeding the same B7 (bench/gpu_speed.py);
#  2. the recipes side by side for the same minutes each on synthetic data (bench/accuracy.py),
#     all from random weights (the device cannot download ImageNet weights).
# Usage: bash bench/gpu.sh [MINUTES_PER_RECIPE]   (output: bench/out/gpu/*.md, printed too)
set -euo pipefail
cd "$(dirname "$0")/.."
MIN=${1:-1}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-bench/out/gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,noheader | tee "$OUT/gpu.txt"
# 1: speed and memory per preset and precision (~2 min)
$PY bench/gpu_speed.py --steps 10 --workers 8 --out "$OUT/speed.md"
# 2: equal-budget study (~5 min)
$PY bench/accuracy.py --minutes "$MIN" --train 10000 --test 1000 --test-max 500 --out "$OUT/accuracy" \
    --recipes seed,winner,gpu,default \
    --set seed:pretrained= --set winner:pretrained= --set gpu:pretrained= \
    --set seed:num_workers=8 --set winner:num_workers=8 --set gpu:num_workers=8
# (default keeps num_workers 0: its generated pools live in the main process, docs/learning.md)
cat "$OUT"/speed.md "$OUT"/accuracy/*.md
