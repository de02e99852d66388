#!/bin/bash
# arm.sh WORKTREE NAME TRAIN_SEED PRETRAINED STEPS_PER_EPOCH [extra args...]   env: THREADS (2), LR (0.001), POOLS (/work/notes/pools)
# default's fine-tune (4 epochs of STEPS_PER_EPOCH at 256 px on the widened scenes) of dm_fcn_deep from PRETRAINED
wt=$1; name=$2; ts=$3; pre=$4; spe=$5; shift 5
cd $wt
PYTHONPATH=src exec /work/main/.venv/bin/python bench/learn.py --arms preset --preset default --model dm_fcn_deep \
  --threads ${THREADS:-2} --workers ${WORKERS:-1} --pool 40000 --easy-pool 1500 --n-test 600 --pool-cache ${POOLS:-/work/notes/pools} --seed 0 \
  --train-seed $ts --set image_size=256 --set pretrained=$pre \
  --set "stages=[{name: scenes, source: dense, steps: $spe, epochs: 4, pool: 20000, lr: ${LR:-0.001}, knobs: {speckle: 0.5, thickness: [0.10, 0.30]}}]" \
  --out /work/notes/runs12/$name "$@" > /work/notes/runs12/$name.log 2>&1
