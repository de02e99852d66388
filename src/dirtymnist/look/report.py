"""One self-contained HTML report of a training run, with its PNG plots written beside it.

    dirtymnist report runs/cpu --data data/          # -> runs/cpu/report/report.html

Shows learning curves per fold, per-letter accuracy/precision/recall, which letters are missed
and hallucinated (and together), OOF label accuracy against a global threshold, and a gallery
of the worst validation images. Images are embedded as data URIs: the page loads nothing else.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dirtymnist import layout
from dirtymnist.arrays import positions
from dirtymnist.atomic import atomic_write_text
from dirtymnist.errors import DataError
from dirtymnist.infer.thresholds import Thresholds, decode, run_thresholds
from dirtymnist.look.explain import explain_worst
from dirtymnist.look.runs import RunRecord, load_run
from dirtymnist.metrics import exact_match, label_accuracy, per_letter_stats
from dirtymnist.rundir import RunDir
from dirtymnist.tracking import log_report

log = logging.getLogger(__name__)

HEAT_IMAGES = 6  # worst images whose wrong letters get heat maps
THRESHOLD_GRID = np.round(np.arange(0.02, 0.99, 0.01), 2)  # (97,) global thresholds tried
_CONFIG_SHOWN = ("preset", "model", "pretrained_record", "image_size", "head", "loss", "augment", "epochs",
                 "batch_size", "lr", "optimizer", "scheduler", "ema", "folds_k", "subset")


@dataclass
class Report:
    """What `build_report` wrote and the numbers it printed."""

    html: Path
    pngs: list[Path]
    fold_rows: list[dict]  # per fold: fold, epochs, best_epoch, val_loss, label_acc, exact_match, oof
    oof: dict = field(default_factory=dict)  # images, label_acc_05, best_threshold, ...
    averaged: list[dict] = field(default_factory=list)  # swa.pt / averaged.pt noted in run.json


# --------------------------------------------------------------------------- inputs
class _TrainImages:
    """Labels and images of training indices: from the cache when built, else from the PNGs."""

    def __init__(self, data_dir: Path):
        from dirtymnist.data.cache import open_split
        from dirtymnist.data.dataset import DataPaths, read_label_csv

        self.paths, self.split = None, None
        try:
            self.split = open_split(data_dir, "train")
            index, labels = self.split.index, self.split.labels
        except DataError:
            self.paths = DataPaths.from_root(data_dir)
            table = read_label_csv(self.paths.train_csv)
            index, labels = table.index, table.labels
        if labels is None:
            raise DataError(f"{data_dir}: the training split has no labels")
        self._index, self._labels = np.asarray(index), np.asarray(labels)
        self._order = np.argsort(self._index, kind="stable")
        self.source = data_dir

    def rows(self, index: np.ndarray) -> np.ndarray:
        rows = positions(self._index, index)
        bad = rows < 0
        if bad.any():
            raise DataError(f"{self.source}: has no image {int(index[bad][0])} of the run's "
                            f"validation folds ({int(bad.sum())} missing); is this the run's data?")
        return rows

    def labels(self, index: np.ndarray) -> np.ndarray:
        return self._labels[self.rows(index)].astype(np.uint8)  # (N, 26)

    def images(self, index: np.ndarray) -> np.ndarray:
        if self.split is not None:
            return np.stack([np.asarray(self.split.images[r]) for r in self.rows(index)])
        from dirtymnist.data.dataset import read_image

        return np.stack([read_image(self.paths.train_dir / layout.png_name(i)) for i in index])


# --------------------------------------------------------------------------- analysis
def analyse_oof(probs: np.ndarray, true01: np.ndarray, thresholds,
                letters=layout.LETTERS) -> dict:
    """Scores of OOF probabilities (N, 26) against 0/1 targets, decided by the submissions' rule
    (`thresholds.Thresholds.apply`: p > t, or count-aware decoding); `thresholds` is a
    `Thresholds` or a scalar / (26,) array of per-letter thresholds.

    Returns label_acc, exact_match, per_letter (metrics.per_letter_stats), missed / hallucinated
    (26,) counts, confusion (26, 26) counts of images where letter i was missed while letter j
    was hallucinated, errors (N,) per image, and the global-threshold curve (grid, curve).
    """
    true = true01.astype(bool)
    if not isinstance(thresholds, Thresholds):
        thresholds = Thresholds(np.broadcast_to(np.asarray(thresholds, np.float64), (probs.shape[1],)).copy())
    pred = thresholds.apply(probs).astype(bool)
    missed, halluc = true & ~pred, pred & ~true
    curve = np.array([float((decode(probs, t) == true).mean()) for t in THRESHOLD_GRID])
    return {
        "label_acc": label_accuracy(pred, true),
        "exact_match": exact_match(pred, true),
        "per_letter": per_letter_stats(pred, true, letters),
        "pred": pred,
        "missed": missed.sum(axis=0),
        "hallucinated": halluc.sum(axis=0),
        "confusion": missed.T.astype(np.int64) @ halluc.astype(np.int64),
        "errors": (missed | halluc).sum(axis=1),
        # tie-break between images with as many errors: how far off the probabilities were
        "badness": np.abs(probs - true).sum(axis=1),
        "grid": THRESHOLD_GRID,
        "curve": curve,
    }


def fold_summary(run: RunRecord) -> list[dict]:
    """Per fold: epochs logged, the best epoch (by the run's best_metric) and its scores."""
    metric = run.config.get("best_metric", "label_acc")
    rows = []
    for fold, rec in run.folds.items():
        best = rec.best(metric)
        if best is None:
            continue
        rows.append({"fold": fold, "epochs": len(rec.history), "best_epoch": best["epoch"],
                     "val_loss": best.get("val_loss", float("nan")),
                     "label_acc": best.get("label_acc", float("nan")),
                     "exact_match": best.get("exact_match", float("nan")),
                     "oof_images": 0 if rec.probs is None else len(rec.probs)})
    return rows


# --------------------------------------------------------------------------- the report
def build_report(run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                 out: str | os.PathLike | None = None, gallery: int = 24) -> Report:
    """Write `out` (default RUN/report/report.html) and its PNGs beside it; return what was written.

    `data_dir` (or the one the run recorded) gives the true labels of the OOF images and the
    gallery's pictures. Thresholds: RUN/thresholds.json when present, else 0.5.
    """
    from dirtymnist.look import plots

    run_dir = RunDir(run_dir)
    run = load_run(run_dir, with_oof=True)
    fold_rows = fold_summary(run)
    if not fold_rows:
        raise DataError(f"{run_dir}: no fold has logged an epoch yet (no metrics in any fold)")
    with_oof = [r for r in run.folds.values() if r.probs is not None]
    if not with_oof:
        raise DataError(f"{run_dir}: no fold has out-of-fold probabilities yet; train at least one epoch")
    letters = layout.LETTERS
    probs = np.concatenate([r.probs for r in with_oof])  # (N, 26) float32
    index = np.concatenate([r.index for r in with_oof])  # (N,) int64
    if probs.shape[1] != len(letters):
        raise DataError(f"{run_dir}: out-of-fold probabilities have {probs.shape[1]} columns, expected {len(letters)}")
    fold_of = np.concatenate([np.full(len(r.probs), r.fold) for r in with_oof])
    data = _TrainImages(run_dir.data_dir(data_dir))
    true = data.labels(index)
    # the rule a submission of this run uses: RUN/thresholds.json when present, else 0.5
    from_file = run_dir.thresholds.is_file()
    thresholds = run_thresholds(run_dir)
    a = analyse_oof(probs, true, thresholds, letters)
    for row in fold_rows:
        sel = fold_of == row["fold"]
        row["oof_acc"] = label_accuracy(a["pred"][sel], true[sel].astype(bool)) if sel.any() else float("nan")

    out = Path(out) if out else run_dir.report
    png_dir = out.parent
    figs = {
        "curves": plots.plot_learning_curves({f: r.history for f, r in run.folds.items()}),
        "letters": plots.plot_letter_bars(a["per_letter"]),
        "confusion": plots.plot_confusion(a["confusion"], a["missed"], a["hallucinated"], letters),
        "threshold": plots.plot_threshold_curve(
            a["grid"], a["curve"], a["label_acc"] if from_file else None),
    }
    worst = np.lexsort((-a["badness"], -a["errors"]))[:gallery]  # most errors first
    heat_note = ""
    if len(worst):
        titles = [f"#{int(index[i])} fold {int(fold_of[i])}: {int(a['errors'][i])} wrong" for i in worst]
        figs["gallery"] = plots.plot_gallery(data.images(index[worst]), true[worst],
                                             a["pred"][worst], letters, titles)
        top = worst[:HEAT_IMAGES]  # where the model looked, on the worst few (explain.py)
        fig, heat_note = explain_worst(run_dir, data.images(index[top]), fold_of[top], true[top],
                                       a["pred"][top], probs[top], titles[:len(top)], letters)
        if fig is not None:
            figs["heatmaps"] = fig
    uris, pngs = {}, []
    for name, fig in figs.items():
        path = png_dir / f"{name}.png"
        uris[name] = "data:image/png;base64," + base64.b64encode(plots.save_png(fig, path)).decode()
        pngs.append(path)

    best = int(np.argmax(a["curve"]))
    oof = {"images": len(probs), "thresholds": (f"{run_dir.thresholds.name} ({thresholds.decode})" if from_file else "0.5"),
           "label_acc": a["label_acc"], "exact_match": a["exact_match"],
           "label_acc_05": float(a["curve"][int(np.argmin(np.abs(a["grid"] - 0.5)))]),
           "best_threshold": float(a["grid"][best]), "best_threshold_acc": float(a["curve"][best])}
    averaged = read_averaged(run_dir)
    page = _render_html(run, data.source, fold_rows, a, oof, uris, heat_note, averaged)
    atomic_write_text(out, page)
    log.info("report written: %s", out)
    log_report(run_dir.path, [out, *pngs])  # into the run's MLflow run when it was tracked
    return Report(html=out, pngs=pngs, fold_rows=fold_rows, oof=oof, averaged=averaged)


def read_averaged(run_dir: str | os.PathLike) -> list[dict]:
    """The averaged checkpoints (`swa_epochs`, `dirtymnist average`) a run noted in run.json,
    with their validation scores: one row per checkpoint."""
    record = RunDir(run_dir).read_record()
    return [{"checkpoint": name, **{k: v for k, v in entry.items() if k != "from"},
             "from": ", ".join(entry.get("from", []))}
            for name, entry in sorted(record.get("checkpoints", {}).items())]


# --------------------------------------------------------------------------- HTML
# Counts loaded / broken images and script errors into #imgcheck once the page has loaded;
# the browser test (and a curious reader) reads it. Inline: the page loads nothing else.
_CHECK_SCRIPT = """
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    errors.push(e.message || ("failed to load " + ((e.target && e.target.tagName) || "resource")));
  }, true);
  document.addEventListener("securitypolicyviolation", function (e) {
    errors.push("blocked " + e.blockedURI);
  });
  var consoleError = console.error;
  console.error = function () {
    errors.push(Array.prototype.join.call(arguments, " "));
    consoleError.apply(console, arguments);
  };
  window.addEventListener("load", function () {
    var imgs = document.images, ok = 0;
    for (var i = 0; i < imgs.length; i++) {
      if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;
    }
    var el = document.getElementById("imgcheck");
    el.setAttribute("data-images", imgs.length);
    el.setAttribute("data-loaded", ok);
    el.setAttribute("data-broken", imgs.length - ok);
    el.setAttribute("data-errors", errors.length);
    el.textContent = "page check: " + ok + "/" + imgs.length + " images loaded, " +
      errors.length + " errors" + (errors.length ? ": " + errors.join(" | ") : "");
  });
})();
"""

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto;
       max-width: 1220px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.muted { color: #777; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.missed { color: #d62728; font-weight: bold; } .halluc { color: #1f77b4; font-weight: bold; }
#imgcheck { color: #999; font-size: 0.8em; margin-top: 2em; }
"""


def _table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p class='muted'>(none)</p>"
    columns = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns)
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(v) -> str:
    if isinstance(v, float):
        return "-" if np.isnan(v) else f"{v:.4f}" if abs(v) < 100 else f"{v:.0f}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return "" if v is None else str(v)


def _render_html(run: RunRecord, data_dir: Path, fold_rows: list[dict], a: dict, oof: dict,
                 uris: dict[str, str], heat_note: str = "", averaged: list[dict] = ()) -> str:
    letters = layout.LETTERS
    name = html.escape(run.name)
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    cfg_rows = [{"key": k, "value": run.config[k]} for k in _CONFIG_SHOWN if k in run.config]
    stats = a["per_letter"]
    letter_rows = [{"letter": k, **{m: stats[k][m] for m in ("accuracy", "precision", "recall", "f1")},
                    "support": stats[k]["support"], "missed": int(a["missed"][j]),
                    "hallucinated": int(a["hallucinated"][j])}
                   for j, k in sorted(enumerate(letters), key=lambda jk: stats[jk[1]]["accuracy"])]
    conf = a["confusion"]
    pairs = sorted(((int(conf[i, j]), letters[i], letters[j]) for i in range(len(letters))
                    for j in range(len(letters)) if conf[i, j] > 0), reverse=True)[:12]
    pair_rows = [{"missed": m, "hallucinated": h, "images": c} for c, m, h in pairs]

    def img(key: str, alt: str) -> str:
        return f'<img src="{uris[key]}" alt="{html.escape(alt)}">' if key in uris else ""

    summary = (f"OOF label accuracy <b>{oof['label_acc']:.4f}</b> at {oof['thresholds']} "
               f"(exact match {oof['exact_match']:.3f}, {oof['images']} images); "
               f"global threshold 0.5: {oof['label_acc_05']:.4f}; best global threshold "
               f"{oof['best_threshold']:.2f}: {oof['best_threshold_acc']:.4f}")
    gallery = ""
    if "gallery" in uris:
        gallery = (f"<h2>Worst validation images</h2><p>Most wrong letters first. Under each image: "
                   f"<b>true</b> letters (<span class='missed'>missed</span> in red) and "
                   f"<b>pred</b>icted letters (<span class='halluc'>hallucinated</span> in blue).</p>"
                   f"{img('gallery', 'gallery of the worst validation images')}"
                   f"<h3>Where the model looked</h3>")
        if "heatmaps" in uris:
            gallery += (f"<p>The first {HEAT_IMAGES} of them, with the heat map of each "
                        f"<span class='missed'>missed</span> and <span class='halluc'>hallucinated</span> "
                        f"letter: bright = where the model saw that letter ({html.escape(heat_note)}).</p>"
                        f"{img('heatmaps', 'heat maps of wrong letters')}")
        else:
            gallery += f"<p class='muted' id='noheat'>{html.escape(heat_note)}</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>dirtymnist report: {name}</title>
<style>{_CSS}</style>
<script>{_CHECK_SCRIPT}</script>
</head><body>
<h1>Run {name}</h1>
<p class="muted">{html.escape(str(run.path.resolve()))} &middot; data {html.escape(str(data_dir))} &middot; written {now}</p>
{_table(cfg_rows)}
<h2>Folds</h2>
<p>{summary}</p>
{_table(fold_rows)}
{"<h3>Averaged checkpoints (validation of the same fold)</h3>" + _table(list(averaged)) if averaged else ""}
<h2>Learning curves</h2>
{img('curves', 'learning curves per fold')}
<h2>Per-letter scores</h2>
{img('letters', 'per-letter accuracy, precision and recall')}
<details><summary>table (hardest first)</summary>{_table(letter_rows)}</details>
<h2>Letter confusions</h2>
<p>Row i, column j: images where letter i was missed while letter j was hallucinated.</p>
{img('confusion', 'missed vs hallucinated letters')}
{_table(pair_rows)}
<h2>Threshold</h2>
{img('threshold', 'OOF label accuracy against a global threshold')}
{gallery}
<div id="imgcheck">page check: not run (scripts off?)</div>
</body></html>
"""
