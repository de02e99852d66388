#!/bin/bash
# fp32 confirm of default from ready.256px8 (seed 1), then a second training seed in bf16; look-alike scores
R=/work/notes/runs12
while [ ! -f $R/chain18.done ]; do sleep 5; done
cd /work/main
bash $R/arm.sh /work/main r16_x8f75_s1_fp32 1 ready.256px8 390 --set amp=off
bash $R/arm.sh /work/main r16_x8f75_s2 2 ready.256px8 390
for n in r16_x8f75_s1_fp32 r16_x8f75_s2; do
  PYTHONPATH=src .venv/bin/python bench/lookalike.py score /work/notes/lookalike/set600 $R/$n/preset/last.pt --pool-cache /work/notes/pools --threads 2 > $R/$n.la.log 2>&1
done
echo done > $R/chain19.done
