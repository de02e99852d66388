#!/bin/bash
# round 20 (issue 14), the 2-core AMD EPYC without AMX (fp32): default given the 60 minutes
# (2,340 steps = 6 epochs of 390 instead of 4, the same lr and schedule stretched, as round 17's
# chain27.sh did from ready.256px12) from the shipped ready.256px13, train-seed 1; look-alike score.
R=/work/notes/runs12
cd /work/main
PYTHONPATH=src .venv/bin/python bench/learn.py --arms preset --preset default --model dm_fcn_deep \
  --threads 2 --workers 1 --pool 40000 --easy-pool 1500 --n-test 600 --pool-cache /work/notes/pools --seed 0 \
  --train-seed 1 --set image_size=256 --set pretrained=src/dirtymnist/model/ready/dm_fcn_deep.256px13.safetensors \
  --set "stages=[{name: scenes, source: dense, steps: 390, epochs: 6, pool: 20000, lr: 0.001, knobs: {speckle: 0.5, thickness: [0.10, 0.30]}}]" \
  --out $R/r20_x13f109_60min > $R/r20_x13f109_60min.log 2>&1
PYTHONPATH=src .venv/bin/python bench/lookalike.py score /work/notes/lookalike/set600 $R/r20_x13f109_60min/preset/last.pt --pool-cache /work/notes/pools --threads 2 > $R/r20_x13f109_60min.la.log 2>&1
echo done > $R/chain32.done
