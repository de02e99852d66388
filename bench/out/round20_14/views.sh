#!/bin/bash
# round 20 (issue 14): test-time views beyond rot90 and a two-run ensemble on round 18's two fp32
# runs of default from ready.256px13 (train-seeds 1 and 2, one scene pool), then what limits the
# 60-minute run (bench/limits.py: misses by size on 300 fresh held-out scenes; 600 fresh scenes of
# the training families against the held-out score). The same 2-core AMD EPYC, fp32.
R=/work/notes/runs12; O=bench/out/round20_14
cd /work/main
PYTHONPATH=src .venv/bin/python bench/tta_scales.py $R/r18_x13f109_s1/preset/last.pt --pool-cache /work/notes/pools --threads 2 \
  --only 1,turn1,turn45,1+turn45 --ensemble $R/r18_x13f109_s2/preset/last.pt > $O/views.md 2>&1
PYTHONPATH=src .venv/bin/python bench/limits.py --checkpoint $R/r20_x13f109_60min/preset/last.pt --pool-cache /work/notes/pools \
  --threads 2 --by-size 300 --train-families 600 > $O/limits_60min_rot90.md 2>&1
