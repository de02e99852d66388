#!/bin/bash
# round 23 (issue 14), the 2-core AMD EPYC without AMX (fp32): a second seed of round 22's two arms
# on the same 51-font folder (/work/notes/r22/user, same fold 0 split: folds_seed 42), so the
# finetune-vs-default gap carries a seed-to-seed spread.
#   S+D  default's scenes stage from round 18's seed-2 run (1,560 steps from ready.256px13, exported as
#        r18s2.safetensors), then the data stage for 1 epoch of fold 0's 20,000 (625 steps), seed 1
#   D    the `finetune` preset, seed 1: ready.256px13, the data stage only, 2 epochs (1,250 steps)
R=/work/notes/r23
R22=/work/notes/r22
DATA=$R22/user
cd /work/main
.venv/bin/python scripts/make_ready_weights.py --model dm_fcn_deep \
  --from-checkpoint /work/notes/runs12/r18_x13f109_s2/preset/last.pt --out $R/r18s2.safetensors > $R/export.log 2>&1
/usr/bin/time -v .venv/bin/dirtymnist train $DATA --preset finetune --run-dir $R/d --set seed=1 > $R/d.log 2>&1
/usr/bin/time -v .venv/bin/dirtymnist train $DATA --preset default --run-dir $R/sd --set seed=1 \
  --set pretrained=$R/r18s2.safetensors --set epochs=1 --set "stages=[{name: data, source: data, lr: 0.0003}]" \
  > $R/sd.log 2>&1
echo done > $R/pipeline.done
# scored: the scenes stage alone (S, seed-2 run), S+D and D of this round, on the folder's test split
# (and the learn bench's held-out families), then on testC (12 fonts in no folder and no weights)
.venv/bin/python bench/lookalike.py score $DATA /work/notes/runs12/r18_x13f109_s2/preset/last.pt \
  $R/sd/fold0/best.pt $R/d/fold0/best.pt \
  --pool-cache /work/notes/pools --threads 2 > $R/score.md 2> $R/score.log
.venv/bin/python bench/lookalike.py score $R22/testC /work/notes/runs12/r18_x13f109_s2/preset/last.pt \
  $R/sd/fold0/best.pt $R/d/fold0/best.pt --threads 2 > $R/scoreC.md 2> $R/scoreC.log
echo done > $R/score.done
