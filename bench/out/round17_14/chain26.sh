#!/bin/bash
# round 17: the best of links 10-12 (by default's held-out + look-alike score, no TTA) gets the
# fp32 check (seed 1) and a second bf16 training seed, each with its look-alike score
R=/work/notes/runs12
while [ ! -f $R/chain25.done ]; do sleep 5; done
cd /work/main
best=$(for n in 10 11 12; do
  f=$R/r17_x${n}f109_s1.la.log; [ -f $f ] || continue
  grep '| none |' $f | awk -F'|' -v n=$n '{gsub(/ /,"",$4); gsub(/ /,"",$5); print $4+$5, n}'
done | sort -g | tail -1 | awk '{print $2}')
echo "best link: $best" > $R/chain26.best
bash $R/arm.sh /work/main r17_x${best}f109_s1_fp32 1 $R/dm_fcn_deep.256px$best.safetensors 390 --set amp=off
PYTHONPATH=src .venv/bin/python bench/lookalike.py score /work/notes/lookalike/set600 $R/r17_x${best}f109_s1_fp32/preset/last.pt --pool-cache /work/notes/pools --threads 2 > $R/r17_x${best}f109_s1_fp32.la.log 2>&1
bash $R/arm.sh /work/main r17_x${best}f109_s2 2 $R/dm_fcn_deep.256px$best.safetensors 390
PYTHONPATH=src .venv/bin/python bench/lookalike.py score /work/notes/lookalike/set600 $R/r17_x${best}f109_s2/preset/last.pt --pool-cache /work/notes/pools --threads 2 > $R/r17_x${best}f109_s2.la.log 2>&1
echo done > $R/chain26.done
