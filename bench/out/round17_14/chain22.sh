#!/bin/bash
# round 17: fp32 check of default from link 9's weights (seed 1), and its look-alike score
R=/work/notes/runs12
cd /work/main
bash $R/arm.sh /work/main r17_x9f75_s1_fp32 1 $R/dm_fcn_deep.256px9.safetensors 390 --set amp=off
PYTHONPATH=src .venv/bin/python bench/lookalike.py score /work/notes/lookalike/set600 $R/r17_x9f75_s1_fp32/preset/last.pt --pool-cache /work/notes/pools --threads 2 > $R/r17_x9f75_s1_fp32.la.log 2>&1
echo done > $R/chain22.done
