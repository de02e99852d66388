#!/bin/bash
# round 21, second part: is the data stage's gain the scene style (transfers to any hands) or the
# fonts (only to hands in the user's data)? D9: ready.256px13, the data stage only, on a folder of
# the first folder's scenes from 9 of the 13 fonts (split_fonts.py; 2 epochs of fold 0's 13,846 =
# 866 steps, about two thirds of D's 1,250, for the session's time). testB: 1,500 fresh scenes (seed 200) from the other 4 fonts, which
# D and S+D saw in their data and D9 did not. Runs after score.sh.
R=/work/notes/r21
cd /work/main
while [ ! -f $R/score.done ]; do sleep 30; done
# .venv/bin/python bench/out/round21_14/split_fonts.py $R/user $R/split
# .venv/bin/python bench/lookalike.py folder $R/testB --fonts /work/notes/lookalike/fonts \
#   --families caveat-brush,dancing-script,marck-script,poor-story --n-train 0 --n-test 1500 --seed 200 --workers 1
/usr/bin/time -v .venv/bin/dirtymnist train $R/split --preset default --run-dir $R/d9 \
  --set epochs=2 --set "stages=[{name: data, source: data, lr: 0.0003}]" > $R/d9.log 2>&1
# (scored in two commands, the first while D9 trained, as the session's time asked)
.venv/bin/python bench/lookalike.py score $R/testB /work/notes/r20/start13.pt $R/sd/fold0/best.pt $R/d/fold0/best.pt \
  --threads 1 > $R/scoreB.md 2> $R/scoreB.log
.venv/bin/python bench/lookalike.py score $R/testB $R/d9/fold0/best.pt --threads 2 > $R/scoreB_d9.md 2>> $R/scoreB.log
echo done > $R/split.done
# What was scored in the end (the session's time): D9's first-epoch checkpoint, copied when its
# validation printed, while the second epoch ran:
#   cp $R/d9/fold0/best.pt $R/d9_e1.pt
#   .venv/bin/python bench/lookalike.py score $R/testB $R/d9_e1.pt --threads 1   # -> scoreB_d9_epoch1.md
