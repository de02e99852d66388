#!/bin/bash
# round 18 (issue 14), a 2-core AMD EPYC without AMX (fp32: amp auto = fp32 here):
# link 13 = a LONGER link (6 epochs of 390 = 2,340 steps instead of 4 x 390) from ready.256px12 on
# freshly rendered scenes (--seed 5) from the 109 training families; then default given the issue's
# 60 minutes (2,340 steps) from link 13, train-seed 1; look-alike score.
R=/work/notes/runs12; WT=/work/notes/wt_fonts18
cd /work/main
PYTHONPATH=src .venv/bin/python bench/lookalike.py make /work/notes/lookalike/set600 --fonts /work/notes/lookalike/fonts --n 600 > $R/la_make.log 2>&1
cd $WT
PYTHONPATH=src /work/main/.venv/bin/python bench/learn.py --arms preset --preset default --model dm_fcn_deep \
  --threads 2 --workers 2 --pool 40000 --easy-pool 1500 --n-test 600 --pool-cache /work/notes/pools_fonts18 --seed 5 \
  --train-seed 8 --set image_size=256 --set pretrained=ready.256px12 \
  --set "stages=[{name: scenes, source: dense, steps: 390, epochs: 6, pool: 20000, lr: 0.001, knobs: {speckle: 0.5, thickness: [0.10, 0.30]}}]" \
  --out $R/r18_x12f109_s8_long > $R/r18_x12f109_s8_long.log 2>&1
cd /work/main
.venv/bin/python scripts/make_ready_weights.py --model dm_fcn_deep --from-checkpoint $R/r18_x12f109_s8_long/preset/last.pt --out $R/dm_fcn_deep.256px13.safetensors >> $R/r18_x12f109_s8_long.log 2>&1
PYTHONPATH=src .venv/bin/python bench/learn.py --arms preset --preset default --model dm_fcn_deep \
  --threads 2 --workers 1 --pool 40000 --easy-pool 1500 --n-test 600 --pool-cache /work/notes/pools --seed 0 \
  --train-seed 1 --set image_size=256 --set pretrained=$R/dm_fcn_deep.256px13.safetensors \
  --set "stages=[{name: scenes, source: dense, steps: 390, epochs: 6, pool: 20000, lr: 0.001, knobs: {speckle: 0.5, thickness: [0.10, 0.30]}}]" \
  --out $R/r18_x13f109_60min > $R/r18_x13f109_60min.log 2>&1
PYTHONPATH=src .venv/bin/python bench/lookalike.py score /work/notes/lookalike/set600 $R/r18_x13f109_60min/preset/last.pt --pool-cache /work/notes/pools --threads 2 > $R/r18_x13f109_60min.la.log 2>&1
echo done > $R/chain28.done
