#!/bin/bash
# round 18: replaces chain28.sh's tail (its bash was stopped during link 13; the link ran on). On this
# EPYC the link's epochs took 650-750 s (1.7-1.9 s a step), so the 60-minute check would not fit
# the session: default from link 13 is measured on its 40 minutes (4 x 390 steps, fp32, train-seed
# 1), which compares with ready.256px12's fp32 run (0.8571 / 0.8702, look-alike 0.843 / 0.855).
R=/work/notes/runs12
cd /work/main
while pgrep -f "out $R/r18_x12f109_s8_long" > /dev/null; do sleep 10; done
.venv/bin/python scripts/make_ready_weights.py --model dm_fcn_deep --from-checkpoint $R/r18_x12f109_s8_long/preset/last.pt --out $R/dm_fcn_deep.256px13.safetensors >> $R/r18_x12f109_s8_long.log 2>&1
PYTHONPATH=src .venv/bin/python bench/learn.py --arms preset --preset default --model dm_fcn_deep \
  --threads 2 --workers 1 --pool 40000 --easy-pool 1500 --n-test 600 --pool-cache /work/notes/pools --seed 0 \
  --train-seed 1 --set image_size=256 --set pretrained=$R/dm_fcn_deep.256px13.safetensors \
  --set "stages=[{name: scenes, source: dense, steps: 390, epochs: 4, pool: 20000, lr: 0.001, knobs: {speckle: 0.5, thickness: [0.10, 0.30]}}]" \
  --out $R/r18_x13f109_s1 > $R/r18_x13f109_s1.log 2>&1
PYTHONPATH=src .venv/bin/python bench/lookalike.py score /work/notes/lookalike/set600 $R/r18_x13f109_s1/preset/last.pt --pool-cache /work/notes/pools --threads 2 > $R/r18_x13f109_s1.la.log 2>&1
echo done > $R/chain29.done
