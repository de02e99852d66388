#!/bin/bash
# round 21: every arm on the data folder's 1,000 test scenes and on the learn bench's 600 held-out
# family scenes, none and rot90 (bench/lookalike.py score; start13.pt is ready.256px13 wrapped as a
# checkpoint, round 20). Runs after pipeline.sh.
R=/work/notes/r21
cd /work/main
while [ ! -f $R/pipeline.done ]; do sleep 30; done
.venv/bin/python bench/lookalike.py score $R/user /work/notes/r20/start13.pt \
  /work/notes/runs12/r18_x13f109_s1/preset/last.pt $R/sd/fold0/best.pt $R/d/fold0/best.pt \
  --pool-cache /work/notes/pools --threads 2 > $R/score.md 2> $R/score.log
echo done > $R/score.done
