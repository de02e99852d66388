#!/bin/bash
# round 22, second part: do the hands learned from a folder transfer to hands in no folder? testC:
# 1,500 scenes (competition layout, seed 400) from 12 more fonts fetched for this round, in no
# folder and no weights (testfonts_sheet.png; the hairline formal scripts, the two sketch-textured
# fonts and the Playwrite siblings of the folder's four left out). Scored: the start, default's
# scenes stage (S), S+D and D of this round (51 hands), and round 21's D (13 hands). Runs after pipeline.sh.
R=/work/notes/r22
cd /work/main
# .venv/bin/python scripts/fetch_fonts.py --dest $R/testfonts --hangul "" --families \
#   licorice,playwrite-fr-moderne,playwrite-nz,playwrite-cu,playwrite-is,great-vibes,tangerine,sofia,stalemate,euphoria-script,darumadrop-one,cherry-bomb-one,yuji-boku,fredericka-the-great,cabin-sketch,shalimar,princess-sofia,quintessential,grey-qo,vujahday-script,mouse-memoirs,lovers-quarrel,arizonia,parisienne,bonbon,felipa,fondamento,macondo,engagement,inspiration
# .venv/bin/python bench/lookalike.py folder $R/testC --fonts $R/testfonts --n-train 0 --n-test 1500 --seed 400 --workers 1 \
#   --families cherry-bomb-one,darumadrop-one,engagement,felipa,fondamento,macondo,mouse-memoirs,princess-sofia,quintessential,sofia,vujahday-script,yuji-boku
while [ ! -f $R/score.done ]; do sleep 30; done
.venv/bin/python bench/lookalike.py score $R/testC /work/notes/r20/start13.pt \
  /work/notes/runs12/r18_x13f109_s1/preset/last.pt $R/sd/fold0/best.pt $R/d/fold0/best.pt \
  /work/notes/r21/d/fold0/best.pt --threads 2 > $R/scoreC.md 2> $R/scoreC.log
echo done > $R/scoreC.done
