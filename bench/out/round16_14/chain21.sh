#!/bin/bash
# a second training seed of default from link 9's weights (bf16), and its look-alike score
R=/work/notes/runs12
cd /work/main
bash $R/arm.sh /work/main r16_x9f75_s2 2 $R/dm_fcn_deep.256px9.safetensors 390
PYTHONPATH=src .venv/bin/python bench/lookalike.py score /work/notes/lookalike/set600 $R/r16_x9f75_s2/preset/last.pt --pool-cache /work/notes/pools --threads 2 > $R/r16_x9f75_s2.la.log 2>&1
echo done > $R/chain21.done
