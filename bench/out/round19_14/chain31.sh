#!/bin/bash
# round 19 (issue 14), the same 2-core AMD EPYC without AMX (fp32): link 14 = an ordinary 4-epoch
# link (4 x 390 steps; round 18 measured that 6 epochs gave about one 4-epoch link's gain for 1.5x
# the steps) from ready.256px13 on freshly rendered scenes (--seed 6) from the 109 training
# families, train-seed 9; then default from link 14 (4 x 390 steps, fp32, train-seed 1) on the
# learn bench's seed-0 test set, and the look-alike score.
R=/work/notes/runs12; WT=/work/notes/wt_fonts18
cd $WT
PYTHONPATH=src /work/main/.venv/bin/python bench/learn.py --arms preset --preset default --model dm_fcn_deep \
  --threads 2 --workers 2 --pool 40000 --easy-pool 1500 --n-test 600 --pool-cache /work/notes/pools_fonts18 --seed 6 \
  --train-seed 9 --set image_size=256 --set pretrained=$R/dm_fcn_deep.256px13.safetensors \
  --set "stages=[{name: scenes, source: dense, steps: 390, epochs: 4, pool: 20000, lr: 0.001, knobs: {speckle: 0.5, thickness: [0.10, 0.30]}}]" \
  --out $R/r19_x13f109_s9 > $R/r19_x13f109_s9.log 2>&1
cd /work/main
.venv/bin/python scripts/make_ready_weights.py --model dm_fcn_deep --from-checkpoint $R/r19_x13f109_s9/preset/last.pt --out $R/dm_fcn_deep.256px14.safetensors >> $R/r19_x13f109_s9.log 2>&1
PYTHONPATH=src .venv/bin/python bench/learn.py --arms preset --preset default --model dm_fcn_deep \
  --threads 2 --workers 1 --pool 40000 --easy-pool 1500 --n-test 600 --pool-cache /work/notes/pools --seed 0 \
  --train-seed 1 --set image_size=256 --set pretrained=$R/dm_fcn_deep.256px14.safetensors \
  --set "stages=[{name: scenes, source: dense, steps: 390, epochs: 4, pool: 20000, lr: 0.001, knobs: {speckle: 0.5, thickness: [0.10, 0.30]}}]" \
  --out $R/r19_x14f109_s1 > $R/r19_x14f109_s1.log 2>&1
PYTHONPATH=src .venv/bin/python bench/lookalike.py score /work/notes/lookalike/set600 $R/r19_x14f109_s1/preset/last.pt --pool-cache /work/notes/pools --threads 2 > $R/r19_x14f109_s1.la.log 2>&1
echo done > $R/chain31.done
