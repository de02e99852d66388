#!/bin/bash
# arm.sh WORKTREE NAME TRAIN_SEED [extra args...]   env: SIZE (256), EPOCHS (3), STEPS (400), THREADS (1), WORKERS (1)
wt=$1; name=$2; ts=$3; shift 3
cd $wt
PYTHONPATH=src exec /work/main/.venv/bin/python bench/learn.py --arms preset --preset default --model dm_fcn_deep \
  --threads ${THREADS:-1} --workers ${WORKERS:-1} --pool 40000 --easy-pool 1500 --n-test 600 --pool-cache /work/notes/pools --seed 0 \
  --train-seed $ts --set image_size=${SIZE:-256} \
  --set "stages=[{name: scenes, source: dense, steps: ${STEPS:-400}, epochs: ${EPOCHS:-3}, pool: 20000, lr: 0.001, knobs: {speckle: 0.5, thickness: [0.10, 0.30]}}]" \
  --out /work/notes/runs9/$name "$@" > /work/notes/runs9/$name.log 2>&1
