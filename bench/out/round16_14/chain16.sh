#!/bin/bash
# round 16 chain: wait for baseline, then link 6 (75 families), ready weights, default from it, look-alike scores
R=/work/notes/runs12
while pgrep -f "out /work/notes/runs12/r16_def_bf16" >/dev/null; do sleep 5; done
cd /work/main
WORKERS=2 POOLS=/work/notes/pools_fonts bash $R/arm.sh /work/notes/wt_fonts r16_x5f75_s1 1 ready.256px5 390
.venv/bin/python scripts/make_ready_weights.py --model dm_fcn_deep --from-checkpoint $R/r16_x5f75_s1/preset/last.pt --out $R/dm_fcn_deep.256px6.safetensors > $R/mk6.log 2>&1
bash $R/arm.sh /work/main r16_x6f75_s1 1 $R/dm_fcn_deep.256px6.safetensors 390
for n in r16_def_bf16 r16_x5f75_s1 r16_x6f75_s1; do
  PYTHONPATH=src .venv/bin/python bench/lookalike.py score /work/notes/lookalike/set600 $R/$n/preset/last.pt --pool-cache /work/notes/pools --threads 2 > $R/$n.la.log 2>&1
done
echo done > $R/chain16.done
