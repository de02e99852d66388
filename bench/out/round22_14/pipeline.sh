#!/bin/bash
# round 22 (issue 14), the 2-core AMD EPYC without AMX (fp32): round 21's question with many more
# hands. Round 21's stand-in folder drew its scenes from 13 fonts, and the data stage's gain was
# learning those hands; the real data's letters come from thousands of writers. This folder draws
# from 51 fonts none of the package's weights ever saw: the 13 look-alike ones plus 38 handwriting
# fonts fetched for this round (never bundled; not in FAMILIES / WEIGHTS_FAMILIES; the 10 hairline
# formal scripts and the one with missing glyphs of the 49 fetched left out, fonts_sheet.png).
# Same arms, same budgets as round 21:
#   S+D  default's scenes stage (round 18's seed-1 run from ready.256px13, r18s1.safetensors), then
#        the data stage for 1 epoch of fold 0's 20,000 (625 steps)
#   D    the `finetune` preset: ready.256px13, the data stage only, 2 epochs (1,250 steps)
R=/work/notes/r22
DATA=$R/user
cd /work/main
# .venv/bin/python scripts/fetch_fonts.py --dest $R/newfonts --hangul "" --families \
#   delicious-handrawn,julee,kite-one,knewave,jim-nightshade,lakki-reddy,dokdo,yeon-sung,zcool-kuaile,yusei-magic,srisakdi,charmonman,amita,tillana,playwrite-us-trad,playwrite-de-grund,playwrite-it-moderna,playwrite-au-nsw,playwrite-dk-loopet,playwrite-gb-s,puppies-play,twinkle-star,are-you-serious,send-flowers,kolker-brush,water-brush,comforter-brush,gwendolyn,ms-madi,moon-dance,whisper,hurricane,explora,grechen-fuemen,ole,sedgwick-ave-display,mrs-sheppards,mr-bedfort,dr-sugiyama,alex-brush,damion,dynalight,bilbo,clicker-script,condiment,italianno,norican,playball,rochester,ruthie,sail,yesteryear,niconne,meow-script,vibur,leckerli-one,henny-penny,pompiere,chewy,freckle-face
#   (49 kept: 4 MIT-licensed and 7 not on npm skipped)
# fonts51 = links to 38 of them (all but comforter-brush explora kolker-brush mr-bedfort ruthie whisper
#   ms-madi gwendolyn clicker-script alex-brush tillana) + the 13 in /work/notes/lookalike/fonts
# .venv/bin/python bench/lookalike.py folder $DATA --fonts $R/fonts51 --n-train 25000 --n-test 1000 --seed 300 --workers 2
.venv/bin/dirtymnist cache $DATA > $R/cache.log 2>&1
/usr/bin/time -v .venv/bin/dirtymnist train $DATA --preset finetune --run-dir $R/d > $R/d.log 2>&1
/usr/bin/time -v .venv/bin/dirtymnist train $DATA --preset default --run-dir $R/sd \
  --set pretrained=/work/notes/r21/r18s1.safetensors --set epochs=1 --set "stages=[{name: data, source: data, lr: 0.0003}]" \
  > $R/sd.log 2>&1
echo done > $R/pipeline.done
# scored after both runs: every arm on the folder's test split (and the learn bench's held-out families)
.venv/bin/python bench/lookalike.py score $DATA /work/notes/r20/start13.pt \
  /work/notes/runs12/r18_x13f109_s1/preset/last.pt $R/sd/fold0/best.pt $R/d/fold0/best.pt \
  --pool-cache /work/notes/pools --threads 2 > $R/score.md 2> $R/score.log
echo done > $R/score.done
