#!/bin/bash
# round 17, link 12: from link 11's weights with 109 families (75 + 34 more hands) on a FRESH pool (--seed 4, train-seed 7); then default from it (bf16, seed 1) and its look-alike score
R=/work/notes/runs12
while [ ! -f $R/chain24.done ]; do sleep 5; done
cd /work/main
WORKERS=2 POOLS=/work/notes/pools_fonts17 bash $R/arm.sh /work/notes/wt_fonts17 r17_x11f109_s7 7 $R/dm_fcn_deep.256px11.safetensors 390 --seed 4
.venv/bin/python scripts/make_ready_weights.py --model dm_fcn_deep --from-checkpoint $R/r17_x11f109_s7/preset/last.pt --out $R/dm_fcn_deep.256px12.safetensors > $R/mk12.log 2>&1
bash $R/arm.sh /work/main r17_x12f109_s1 1 $R/dm_fcn_deep.256px12.safetensors 390
PYTHONPATH=src .venv/bin/python bench/lookalike.py score /work/notes/lookalike/set600 $R/r17_x12f109_s1/preset/last.pt --pool-cache /work/notes/pools --threads 2 > $R/r17_x12f109_s1.la.log 2>&1
echo done > $R/chain25.done
