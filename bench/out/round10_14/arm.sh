#!/bin/bash
# arm.sh WORKTREE NAME TRAIN_SEED [extra args...]   env: HARD (stage keys appended, e.g. ", hard_share: 0.25, hard_knobs: {...}"), THREADS (2)
wt=$1; name=$2; ts=$3; shift 3
cd $wt
PYTHONPATH=src exec /work/main/.venv/bin/python bench/learn.py --arms preset --preset default --model dm_fcn_deep \
  --threads ${THREADS:-2} --workers ${WORKERS:-1} --pool 40000 --easy-pool 1500 --n-test 600 --pool-cache /work/notes/pools --seed 0 \
  --train-seed $ts --set image_size=256 \
  --set "stages=[{name: scenes, source: dense, steps: 390, epochs: 4, pool: 20000, lr: 0.001, knobs: {speckle: 0.5, thickness: [0.10, 0.30]}${HARD}}]" \
  --out /work/notes/runs10/$name "$@" > /work/notes/runs10/$name.log 2>&1
