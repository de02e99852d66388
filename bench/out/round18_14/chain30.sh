#!/bin/bash
# round 18: a second seed (train-seed 2, fp32) of default from link 13, to tell a real gain from
# seed spread: seed 1 gave 0.8595 / 0.8718 rot90, look-alike 0.846 / 0.858 against ready.256px12's
# fp32 seed 1 at 0.8571 / 0.8702 (0.843 / 0.855); ready.256px12's seed 2 (bf16) was 0.8604 / 0.8696.
R=/work/notes/runs12
cd /work/main


PYTHONPATH=src .venv/bin/python bench/learn.py --arms preset --preset default --model dm_fcn_deep \
  --threads 2 --workers 1 --pool 40000 --easy-pool 1500 --n-test 600 --pool-cache /work/notes/pools --seed 0 \
  --train-seed 2 --set image_size=256 --set pretrained=$R/dm_fcn_deep.256px13.safetensors \
  --set "stages=[{name: scenes, source: dense, steps: 390, epochs: 4, pool: 20000, lr: 0.001, knobs: {speckle: 0.5, thickness: [0.10, 0.30]}}]" \
  --out $R/r18_x13f109_s2 > $R/r18_x13f109_s2.log 2>&1
PYTHONPATH=src .venv/bin/python bench/lookalike.py score /work/notes/lookalike/set600 $R/r18_x13f109_s2/preset/last.pt --pool-cache /work/notes/pools --threads 2 > $R/r18_x13f109_s2.la.log 2>&1
echo done > $R/chain30.done
