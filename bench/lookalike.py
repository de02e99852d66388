"""An independent look-alike test set, and checkpoints scored on it beside the learn bench's.

The scenes are drawn by code that shares nothing with `dirtymnist.data` or `dirtymnist.glyphs`
(Pillow draws the letters, OpenCV thickens, scales and rotates them, numpy adds the noise), from
handwriting fonts the package does not ship, following DATA.md's description of the real images:
10-14 distinct letters of mixed case, 17-55 px high, any angle, thick bright strokes (some
semi-transparent), slight overlaps, 0-3 Hangul distractors, i.i.d. uniform noise. One font per
image, so the score splits by font. It is a check on generalisation, not a copy of the real data:
different code and fonts, the same description.

    python scripts/fetch_fonts.py --dest FONTS --families "$(python bench/lookalike.py fonts)" \
        --hangul gaegu,poor-story,nanum-brush-script
    python bench/lookalike.py make OUT --fonts FONTS [--n 600] [--seed 0] [--families a,b]
    python bench/lookalike.py score OUT CKPT [CKPT ...] [--tta none,rot90] [--pool-cache DIR]
    python bench/lookalike.py folder DATA --fonts FONTS --n-train 25000 --n-test 1000 [--seed 100]

`make` writes OUT/images/NNNNN.png (8-bit grayscale, 256x256), OUT/labels.csv (index, font, a..z)
and OUT/sheet.png (the first 16 scenes). `folder` writes a data folder in the competition's layout
(DATA.md: dirty_mnist_2nd/, its answer CSV, test_dirty_mnist_2nd/, sample_submission.csv, and
test_answer.csv as the synthetic data has), train and test drawn from the same fonts, as the real
train and test images come from one pool of hands: a stand-in for a user's data folder, to run the
whole pipeline (`dirtymnist train DATA`, `predict`, `evaluate`) on scenes we never generated.
`score` prints label accuracy (threshold 0.5) per checkpoint and TTA, per font, and, with
--pool-cache, on the learn bench's 600 held-out-family scenes too (bench/learn.py's test set, from
its cache), so the gap is measured in one run.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from lookalike_scenes import LOOKALIKE_FONTS, MORE_FONTS, TESTC_FONTS, folder, make, read_set  # noqa: E402


def models(checkpoints: list[str], weights: list[str]):
    """(label, model, cfg) per checkpoint and weights: `ema` = what the pipeline predicts with (the
    EMA weights where a checkpoint keeps them, else the trained ones), `raw` = the trained weights."""
    from dirtymnist.model.checkpoint import load_model

    for ckpt in checkpoints:
        for w in weights:
            if w not in ("ema", "raw"):
                raise SystemExit(f"--weights: {w!r} is not ema or raw")
            model, cfg, _ = load_model(Path(ckpt), use_ema=w == "ema")
            yield (f"{ckpt} (raw)" if w == "raw" else ckpt), model.eval(), cfg


def score(out: Path, checkpoints: list[str], ttas: list[str], pool_cache: str, threads: int,
          weights: tuple[str, ...] = ("ema",)) -> None:
    import torch

    from dirtymnist.infer.predict import predict_rows
    from dirtymnist.metrics import label_accuracy
    from dirtymnist.model.transforms import TTA_PRESETS

    torch.set_num_threads(threads)
    images, labels, fonts = read_set(out)
    sets = {"look-alike": (images, labels)}
    if pool_cache:
        sys.path.insert(0, str(Path(__file__).parent))
        from learn import heldout_test  # bench/learn.py (this folder)

        sets = {"held-out families": heldout_test(0, 600, pool_cache), **sets}
    names = sorted(set(fonts))
    print(f"| checkpoint | TTA | {' | '.join(sets)} | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * (len(sets) + len(names)))
    for ckpt, model, cfg in models(checkpoints, list(weights)):
        for tta in ttas:
            accs, per_font = [], []
            for name, (x, y) in sets.items():
                rows = np.arange(len(x))
                logits = predict_rows(model, cfg, x, rows, torch.device("cpu"), TTA_PRESETS[tta], 64)
                pred = (logits > 0).astype(np.uint8)  # sigmoid > 0.5
                accs.append(label_accuracy(pred, y))
                if name == "look-alike":
                    per_font = [label_accuracy(pred[[f == n for f in fonts]], y[[f == n for f in fonts]])
                                for n in names]
            print(f"| {ckpt} | {tta} | " + " | ".join(f"{a:.3f}" for a in accs + per_font) + " |", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="render the set")
    m.add_argument("out", type=Path)
    m.add_argument("--fonts", type=Path, required=True, help="fetch_fonts.py's --dest folder")
    m.add_argument("--n", type=int, default=600)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--families", default="", help="only these font folders' letters (comma-separated); "
                   "e.g. the package's own held-out families, to tell the renderer's part of a gap from the fonts'")
    m.add_argument("--thick", type=float, default=1.0, help="scale of the stroke thickening (0 = the font's own strokes)")
    m.add_argument("--transparent", type=float, default=0.25, help="share of semi-transparent (speckled) letters")
    d = sub.add_parser("folder", help="a data folder in the competition's layout")
    d.add_argument("out", type=Path)
    d.add_argument("--fonts", type=Path, required=True, help="fetch_fonts.py's --dest folder")
    d.add_argument("--n-train", type=int, default=25000)
    d.add_argument("--n-test", type=int, default=1000)
    d.add_argument("--seed", type=int, default=100, help="not 0: `make`'s default set uses seed 0")
    d.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    d.add_argument("--families", default="", help="only these font folders' letters (comma-separated)")
    s = sub.add_parser("score", help="label accuracy of checkpoints on it")
    s.add_argument("out", type=Path)
    s.add_argument("checkpoints", nargs="+")
    s.add_argument("--tta", default="none,rot90")
    s.add_argument("--pool-cache", default="", help="bench/learn.py's --pool-cache: score its held-out test too")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--weights", default="ema", help="ema (the EMA weights where kept, as predict uses) "
                   "and/or raw (the trained weights), comma-separated")
    f = sub.add_parser("fonts", help="print the measured set's font families, comma-separated")
    f.add_argument("--set", default="13", choices=("13", "51", "testc"),
                   help="13: the look-alike set's; 51: those and 38 more (the 51-font folder); testc: 12 in no folder")
    args = p.parse_args(argv)
    if args.cmd == "fonts":
        print(",".join({"13": LOOKALIKE_FONTS, "51": LOOKALIKE_FONTS + MORE_FONTS, "testc": TESTC_FONTS}[args.set]))
    elif args.cmd == "folder":
        folder(args.out, args.fonts, args.n_train, args.n_test, args.seed, args.workers,
               args.families.split(",") if args.families else None)
    elif args.cmd == "make":
        make(args.out, args.fonts, args.n, args.seed, args.families.split(",") if args.families else None,
             args.thick, args.transparent)
    else:
        score(args.out, args.checkpoints, args.tta.split(","), args.pool_cache, args.threads,
              tuple(args.weights.split(",")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
