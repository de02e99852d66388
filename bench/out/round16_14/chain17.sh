#!/bin/bash
# link 7: from link 6's weights with the 75 families again; then default from it; look-alike scores
R=/work/notes/runs12
while [ ! -f $R/chain16.done ]; do sleep 5; done
cd /work/main
WORKERS=2 POOLS=/work/notes/pools_fonts bash $R/arm.sh /work/notes/wt_fonts r16_x6f75b_s2 2 $R/dm_fcn_deep.256px6.safetensors 390
.venv/bin/python scripts/make_ready_weights.py --model dm_fcn_deep --from-checkpoint $R/r16_x6f75b_s2/preset/last.pt --out $R/dm_fcn_deep.256px7.safetensors > $R/mk7.log 2>&1
bash $R/arm.sh /work/main r16_x7f75_s1 1 $R/dm_fcn_deep.256px7.safetensors 390
for n in r16_x6f75b_s2 r16_x7f75_s1; do
  PYTHONPATH=src .venv/bin/python bench/lookalike.py score /work/notes/lookalike/set600 $R/$n/preset/last.pt --pool-cache /work/notes/pools --threads 2 > $R/$n.la.log 2>&1
done
echo done > $R/chain17.done
