#!/bin/bash
# link 8: from link 7's weights with the 75 families (train-seed 3); then default from it; look-alike scores
R=/work/notes/runs12
while [ ! -f $R/chain17.done ]; do sleep 5; done
cd /work/main
WORKERS=2 POOLS=/work/notes/pools_fonts bash $R/arm.sh /work/notes/wt_fonts r16_x7f75b_s3 3 $R/dm_fcn_deep.256px7.safetensors 390
.venv/bin/python scripts/make_ready_weights.py --model dm_fcn_deep --from-checkpoint $R/r16_x7f75b_s3/preset/last.pt --out $R/dm_fcn_deep.256px8.safetensors > $R/mk8.log 2>&1
bash $R/arm.sh /work/main r16_x8f75_s1 1 $R/dm_fcn_deep.256px8.safetensors 390
for n in r16_x7f75b_s3 r16_x8f75_s1; do
  PYTHONPATH=src .venv/bin/python bench/lookalike.py score /work/notes/lookalike/set600 $R/$n/preset/last.pt --pool-cache /work/notes/pools --threads 2 > $R/$n.la.log 2>&1
done
echo done > $R/chain18.done
