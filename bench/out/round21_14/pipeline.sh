#!/bin/bash
# round 21 (issue 14), the 2-core AMD EPYC without AMX (fp32): the whole pipeline on a data folder
# the project never generated. DATA = bench/lookalike.py folder (other code, the 13 look-alike
# fonts, 25,000 train + 1,000 test scenes in the competition's layout, train and test from the
# same fonts as the real data's are from one pool of hands). Where should a user's minutes go?
#   S+D  default's scenes stage (round 18's seed-1 run: 1,560 steps from ready.256px13, exported
#        as r18s1.safetensors), then the preset's data stage for 1 epoch of fold 0's 20,000 (625 steps)
#   D    ready.256px13, the data stage only, 2 epochs (1,250 steps): the scenes' minutes given to the data
# Scored with the CLI (predict best.pt, evaluate on test_answer.csv) and bench/lookalike.py score.
R=/work/notes/r21
DATA=$R/user
cd /work/main
# .venv/bin/python bench/lookalike.py folder $DATA --fonts /work/notes/lookalike/fonts --n-train 25000 --n-test 1000 --seed 100
# .venv/bin/python scripts/make_ready_weights.py --model dm_fcn_deep --from-checkpoint /work/notes/runs12/r18_x13f109_s1/preset/last.pt --out $R/r18s1.safetensors
.venv/bin/dirtymnist cache $DATA > $R/cache.log 2>&1
/usr/bin/time -v .venv/bin/dirtymnist train $DATA --preset default --run-dir $R/sd \
  --set pretrained=$R/r18s1.safetensors --set epochs=1 --set "stages=[{name: data, source: data, lr: 0.0003}]" \
  > $R/sd.log 2>&1
/usr/bin/time -v .venv/bin/dirtymnist train $DATA --preset default --run-dir $R/d \
  --set epochs=2 --set "stages=[{name: data, source: data, lr: 0.0003}]" \
  > $R/d.log 2>&1
for run in sd d; do
  .venv/bin/dirtymnist predict $R/$run --data $DATA --out $R/$run.sub.csv > $R/$run.predict.log 2>&1
  .venv/bin/dirtymnist evaluate $R/$run.sub.csv $DATA/test_answer.csv > $R/$run.eval.log 2>&1
  .venv/bin/dirtymnist predict $R/$run --data $DATA --tta rot90 --out $R/$run.rot90.sub.csv > $R/$run.predict_rot90.log 2>&1
  .venv/bin/dirtymnist evaluate $R/$run.rot90.sub.csv $DATA/test_answer.csv > $R/$run.eval_rot90.log 2>&1
done
echo done > $R/pipeline.done
