"""What limits label accuracy: the rotation ceiling of the task, and what a model confuses.

    PYTHONPATH=src .venv/bin/python bench/limits.py [--checkpoint RUN/fold0/last.pt | --preset cpu]
        [--n-test 600] [--seed 0] [--pool-cache DIR] [--images 400000]

1. **Ceiling.** Letters are drawn at any angle (DATA.md), so some glyphs are the same shape up
   to rotation: a lower-case b turned half a turn is a q, d is p, n is u, m is w (and M is W);
   N turned a quarter is Z (z). Where two labels share a shape, no model can tell which one an
   image holds. This part simulates the generator's label process (10-14 distinct letters,
   each upper case with probability `SceneKnobs.upper`) and computes the Bayes-optimal label
   accuracy of an oracle that sees every glyph's shape exactly but cannot tell aliased shapes
   apart, for two alias lists (`STRICT`; `LOOSE` adds l/I and c/C/U, alike in many hands).
   It is a ceiling for *shape-only* recognition: a hand's style (a b's stem longer than a q's
   tail) can break an alias, so real models may pass it on some fonts.
2. **Confusions** (with a model): on the learn bench's held-out test scenes (the 7 held-out
   glyph families, seed + 1000), per-letter misses and false alarms, and which letters a miss
   turns into: for each pair (x missed, y falsely present in the same image), the count
   beyond what chance (y's false-alarm rate) gives.
3. **Misses by letter size** (with a model, `--by-size N`): N fresh held-out scenes rendered with
   their glyphs' sizes; the share of present letters missed, by the glyph's height on the 256 px
   canvas (letters are distinct within a scene, so a missed label is a missed glyph).
4. **Fit or transfer** (with a model, `--train-families N`): N fresh scenes drawn like the test
   set's but from the TRAINING glyph families. Scoring as well there as on the held-out hands
   means the model under-fits what it was shown; scoring better means new hands are what it
   fails to carry over to.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

# glyph shapes equal up to rotation: sets of (letter, case), case "l" lower / "u" upper
STRICT = [
    {("b", "l"), ("q", "l")},
    {("d", "l"), ("p", "l")},
    {("n", "l"), ("u", "l")},
    {("m", "l"), ("w", "l")},
    {("m", "u"), ("w", "u")},
    {("n", "u"), ("z", "u"), ("z", "l")},
]
LOOSE = [*STRICT, {("l", "l"), ("i", "u")}, {("c", "l"), ("c", "u"), ("u", "u")}]


def _shape_ids(aliases: list[set]) -> dict[tuple[str, str], int]:
    """(letter, case) -> shape id; aliased glyphs share one id."""
    from dirtymnist import layout

    ids: dict[tuple[str, str], int] = {}
    for gid, group in enumerate(aliases, start=1000):  # above the 2 x 26 plain glyph ids
        for glyph in group:
            ids[glyph] = gid
    for k, letter in enumerate(layout.LETTERS):
        for case in "lu":
            ids.setdefault((letter, case), 2 * k + (case == "u"))
    return ids


def _components(aliases: list[set]) -> list[set[str]]:
    """Letters linked through shared shapes (n links u and z): their labels are decided together."""
    comps: list[set[str]] = []
    for group in aliases:
        letters = {letter for letter, _ in group}
        linked = [c for c in comps if c & letters]
        for c in linked:
            comps.remove(c)
            letters |= c
        comps.append(letters)
    return comps


def ceiling(aliases: list[set], images: int, seed: int = 0) -> float:
    """Bayes-optimal label accuracy when aliased shapes cannot be told apart (Monte Carlo)."""
    from dirtymnist import layout
    from dirtymnist.data.synth import SceneKnobs

    knobs = SceneKnobs()
    rng = np.random.default_rng(seed)
    ids = _shape_ids(aliases)
    comps = [sorted(c) for c in _components(aliases)]
    # per component: observation (sorted shape ids of its letters' glyphs) -> label sums, count
    tables = [defaultdict(lambda n=len(c): [np.zeros(n), 0]) for c in comps]
    lo, hi = knobs.letters
    for _ in range(images):
        drawn = rng.choice(26, size=int(rng.integers(lo, hi + 1)), replace=False)
        upper = rng.random(len(drawn)) < knobs.upper
        glyphs = {layout.LETTERS[k]: ("u" if u else "l") for k, u in zip(drawn, upper)}
        for comp, table in zip(comps, tables):
            key = tuple(sorted(ids[(letter, glyphs[letter])] for letter in comp if letter in glyphs))
            row = table[key]
            row[0] += [letter in glyphs for letter in comp]
            row[1] += 1
    errors = 0.0
    for table in tables:
        for sums, n in table.values():
            p = sums / n
            errors += float(np.minimum(p, 1 - p).sum() * n)
    return 1.0 - errors / (images * 26)


def confusions(probs: np.ndarray, labels: np.ndarray, top: int = 12) -> tuple[list, list]:
    """Per-letter rows (letter, accuracy, miss rate, false-alarm rate) and the top pairs
    (x missed, y false alarm in the same image): (x, y, count, expected by chance, share of
    x's misses)."""
    from dirtymnist import layout

    pred = probs > 0.5
    true = labels > 0.5
    miss = true & ~pred
    fa = pred & ~true
    per_letter = []
    for k, letter in enumerate(layout.LETTERS):
        per_letter.append((letter, float((pred[:, k] == true[:, k]).mean()),
                           float(miss[:, k].sum() / max(1, true[:, k].sum())),
                           float(fa[:, k].sum() / max(1, (~true[:, k]).sum()))))
    pairs = []
    for x in range(26):
        for y in range(26):
            if x == y:
                continue
            both = int((miss[:, x] & fa[:, y]).sum())
            # chance: y's false-alarm rate among images where y is absent, times x's misses there
            rate = fa[:, y].sum() / max(1, (~true[:, y]).sum())
            expected = float(rate * (miss[:, x] & ~true[:, y]).sum())
            pairs.append((layout.LETTERS[x], layout.LETTERS[y], both, expected,
                          both / max(1, miss[:, x].sum())))
    pairs.sort(key=lambda r: r[2] - r[3], reverse=True)
    return per_letter, pairs[:top]


def misses_by_size(model, cfg, n: int, seed: int, views, edges=(17, 25, 33, 41, 49, 56)) -> list:
    """(height range, glyphs, share missed) per bin, on n fresh scenes of the held-out families."""
    from dirtymnist import layout
    from dirtymnist.glyphs import split_families

    _, held = split_families(0.2, seed=0)
    scenes, logits = _scored_scenes(model, cfg, held, n, seed + 5000, views)
    heights, missed = [], []
    for sc, row in zip(scenes, logits):
        for g in sc.letters:
            heights.append(g.height)
            missed.append(row[layout.LETTERS.index(g.letter)] <= 0)
    heights, missed = np.array(heights), np.array(missed)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (heights >= lo) & (heights < hi)
        rows.append((f"{lo}-{hi} px", int(sel.sum()), float(missed[sel].mean())))
    rows.append(("all", len(missed), float(missed.mean())))
    return rows


def _scored_scenes(model, cfg, families, n: int, seed: int, views) -> tuple[list, np.ndarray]:
    """n fresh scenes of `families` (the generator's default knobs) and the model's logits."""
    import torch

    from dirtymnist.data.synth import SceneKnobs, render_scene
    from dirtymnist.infer.loader import predict_rows

    knobs = SceneKnobs(families=tuple(families))
    scenes = [render_scene(seed, i, knobs) for i in range(n)]
    images = np.stack([sc.image for sc in scenes])
    return scenes, predict_rows(model, cfg, images, np.arange(n), torch.device("cpu"), views, 64)


def train_families_accuracy(model, cfg, n: int, seed: int, views) -> float:
    """Label accuracy on n fresh scenes of the TRAINING glyph families (threshold 0.5)."""
    from dirtymnist.glyphs import split_families
    from dirtymnist.metrics import label_accuracy

    train, _ = split_families(0.2, seed=0)
    scenes, logits = _scored_scenes(model, cfg, train, n, seed + 7000, views)
    labels = np.stack([sc.labels for sc in scenes]).astype(np.float32)
    return float(label_accuracy((logits > 0).astype(np.float32), labels))


def _model(args):
    import torch

    if args.checkpoint:
        from dirtymnist.model.checkpoint import load_model

        model, cfg, _ = load_model(args.checkpoint, torch.device("cpu"))
        return model, cfg, args.checkpoint
    from dirtymnist.config import load_config
    from dirtymnist.model.build import build_model

    cfg = load_config(args.preset)
    return build_model(cfg, 26), cfg, f"preset {args.preset} ({cfg.model}, pretrained {cfg.pretrained})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="")
    p.add_argument("--preset", default="", help="score the preset's start (e.g. cpu: the ready weights)")
    p.add_argument("--n-test", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool-cache", default="")
    p.add_argument("--images", type=int, default=400_000, help="simulated label draws for the ceiling")
    p.add_argument("--tta", default="rot90")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--by-size", type=int, default=0, help="fresh scenes for misses by letter size (0 = skip)")
    p.add_argument("--train-families", type=int, default=0,
                   help="fresh scenes of the training families, to compare with the held-out score (0 = skip)")
    args = p.parse_args(argv)
    for name, aliases in (("strict", STRICT), ("loose", LOOSE)):
        groups = " ".join("/".join(f"{g[0].upper() if g[1] == 'u' else g[0]}" for g in sorted(s))
                          for s in aliases)
        print(f"ceiling, {name} aliases ({groups}): {ceiling(aliases, args.images, args.seed):.4f}", flush=True)
    if not (args.checkpoint or args.preset):
        return 0
    import torch
    from learn import heldout_test  # bench/learn.py: the bench's held-out test scenes

    from dirtymnist.infer.loader import predict_rows, tta_views
    from dirtymnist.metrics import label_accuracy

    torch.set_num_threads(args.threads)
    images, labels = heldout_test(args.seed, args.n_test, args.pool_cache)
    model, cfg, what = _model(args)
    model.eval()
    logits = predict_rows(model, cfg, images, np.arange(len(images)), torch.device("cpu"),
                          tta_views(args.tta), 64)
    probs = 1 / (1 + np.exp(-logits))
    acc = label_accuracy((probs > 0.5).astype(np.float32), labels)
    print(f"\n{what}, TTA {args.tta}, {len(images)} held-out scenes: label accuracy {acc:.4f}")
    per_letter, pairs = confusions(probs, labels)
    print("\n| letter | accuracy | missed (of present) | false alarms (of absent) |\n|---|---|---|---|")
    for letter, a, m, f in sorted(per_letter, key=lambda r: r[1]):
        print(f"| {letter} | {a:.3f} | {m:.2f} | {f:.2f} |")
    print("\n| x missed | y falsely present, same image | count | by chance | share of x's misses |\n|---|---|---|---|---|")
    for x, y, n, e, share in pairs:
        print(f"| {x} | {y} | {n} | {e:.1f} | {share:.2f} |")
    if args.by_size:
        print(f"\n| glyph height (256 px canvas) | glyphs | missed ({args.by_size} fresh scenes) |\n|---|---|---|")
        for name, count, share in misses_by_size(model, cfg, args.by_size, args.seed, tta_views(args.tta)):
            print(f"| {name} | {count} | {share:.2f} |")
    if args.train_families:
        fit = train_families_accuracy(model, cfg, args.train_families, args.seed, tta_views(args.tta))
        print(f"\ntraining families, {args.train_families} fresh scenes, TTA {args.tta}: label accuracy {fit:.4f} "
              f"(held-out {acc:.4f}, gap {fit - acc:+.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
