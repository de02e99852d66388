"""CLI parsers for inference: `predict`, `ensemble`, `evaluate-tta`, `thresholds`, `evaluate`, `export`.

No heavy imports here: each handler imports its library function when it runs.
"""

from __future__ import annotations

import argparse

from dirtymnist.errors import ConfigError
from dirtymnist.rundir import CHECKPOINT_NAMES

_TTA = ("none", "flip", "rot90", "d4", "rot90_zoom")  # transforms.TTA_PRESETS (not imported: it pulls in torch)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's sub-commands to the top-level parser."""
    p = sub.add_parser(
        "predict", help="predict with a run or an ensemble of runs; write a submission",
        description="Predict DATA_DIR's test (or train) images with one or more RUNs (run "
        "directories: every fold*/best.pt; or checkpoint files). Writes OUT (the sample "
        "submission's rows and columns, 0/1) and OUT's probabilities as NAME.probs.npy + "
        "NAME.probs_index.npy beside it.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directory or checkpoint file")
    p.add_argument("--data", required=True, metavar="DATA_DIR", help="competition-layout data folder")
    p.add_argument("--split", default="test", choices=("test", "train"))
    p.add_argument("--tta", default="none", choices=_TTA, help="test-time augmentation preset")
    _thresholds_arg(p, fit=True)
    p.add_argument("--engine", default="torch", choices=("torch", "onnx"),
                   help="onnx: run the files of `dirtymnist export` with onnxruntime (CPU)")
    _ensemble_args(p)
    checkpoint_arg(p)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cache-dir", help="cache folder (default: DATA_DIR/.dirtymnist_cache)")
    p.add_argument("--out", required=True, help="submission CSV to write")
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "ensemble", help="average saved probability files into a submission (no models)",
        description="Average probability files written by `predict` (NAME.probs.npy with "
        "NAME.probs_index.npy beside it); their indices must be the sample submission's.")
    p.add_argument("probs", nargs="+", metavar="PROBS.npy")
    p.add_argument("--data", required=True, metavar="DATA_DIR", help="data folder (its sample submission)")
    _thresholds_arg(p, fit=False)
    _ensemble_args(p)
    p.add_argument("--out", required=True, help="submission CSV to write")
    p.set_defaults(func=_ensemble)

    p = sub.add_parser(
        "evaluate-tta", help="out-of-fold label accuracy of each TTA preset",
        description="Re-predict each fold's validation rows (its oof_index.npy) with every TTA "
        "preset and report the out-of-fold label accuracy at threshold 0.5. Each view is computed "
        "once and shared by the presets that use it.")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--data", metavar="DATA_DIR", help="the run's data folder (default: the one it recorded)")
    p.add_argument("--tta", action="append", choices=_TTA, help="preset to test (repeatable; default all)")
    p.add_argument("--max-rows", type=int, metavar="N", help="at most N out-of-fold rows, a sample "
                   "stratified by fold (fixed seed), to bound the time on a big run (default: all)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cache-dir", help="cache folder (default: DATA_DIR/.dirtymnist_cache)")
    p.set_defaults(func=_evaluate_tta)

    p = sub.add_parser(
        "thresholds", help="fit per-letter thresholds on a run's out-of-fold probabilities",
        description="Fit one threshold per letter on the OOF probabilities of all folds, compare "
        "with count-aware decoding (10-14 letters per image) and write RUN/thresholds.json.")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--data", metavar="DATA_DIR", help="the run's data folder (default: the one it recorded)")
    p.add_argument("--out", help="where to write (default RUN/thresholds.json)")
    p.set_defaults(func=_thresholds)

    p = sub.add_parser(
        "evaluate", help="score a submission against an answer CSV",
        description="Label accuracy, exact match and a per-letter table of SUBMISSION against "
        "ANSWER (for synthetic data: DATA_DIR/test_answer.csv).")
    p.add_argument("submission", metavar="SUBMISSION.csv")
    p.add_argument("answer", metavar="ANSWER.csv")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser(
        "export", help="export a run's fold models to ONNX",
        description="Export each fold model (no TTA; input: the normalised float network input, "
        "settings in NAME.onnx.json beside it) and check it against torch with onnxruntime.")
    p.add_argument("run", metavar="RUN", help="run directory or checkpoint file")
    p.add_argument("--format", default="onnx", choices=("onnx",))
    checkpoint_arg(p)
    p.add_argument("--out", metavar="DIR", help="folder for the files (default: beside each checkpoint)")
    p.set_defaults(func=_export)


def _thresholds_arg(p, fit: bool) -> None:
    extra = ", or fit (on the runs' out-of-fold files)" if fit else ""
    p.add_argument("--thresholds", default="0.5", metavar="SPEC",
                   help=f"a number (default 0.5; NUMBER:count for count-aware decoding), a "
                   f"thresholds.json{extra}")


def _ensemble_args(p) -> None:
    p.add_argument("--average", default="prob", choices=("prob", "logit"),
                   help="average probabilities (default) or logits")
    p.add_argument("--weights", metavar="W1,W2,...", help="one weight per input (default equal)")
    p.add_argument("--blend", metavar="BLEND.json", help="weights fitted out of fold by `dirtymnist blend` "
                   "(inputs in the blend's order; sets --average too)")


def checkpoint_arg(p) -> None:
    p.add_argument("--checkpoint", default="best", choices=CHECKPOINT_NAMES,
                   help="which fold*/NAME.pt of a run directory: best (default), last, averaged "
                   "(`dirtymnist average`), swa (`--set swa_epochs=N`)")


def _weights(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise ConfigError(f"--weights expects numbers like 2,1, got {text!r}") from None


def _print_outputs(result) -> None:
    print(f"submission: {result.submission} ({len(result.index)} rows, "
          f"{result.pred.sum(1).mean():.2f} letters/image, thresholds {result.thresholds.source}, "
          f"decode {result.thresholds.decode})")
    print(f"probabilities: {result.probs_file}")
    if result.score is not None:
        print(f"labels available: label_acc {result.score.label_acc:.5f}, "
              f"exact_match {result.score.exact_match:.4f}")


def _predict(args) -> int:
    from dirtymnist.infer.predict import PredictOptions, predict

    options = PredictOptions(tta=args.tta, thresholds=args.thresholds, engine=args.engine, average=args.average,
                             weights=_weights(args.weights), blend=args.blend, checkpoint=args.checkpoint,
                             batch_size=args.batch_size, cache_dir=args.cache_dir)
    result = predict(args.runs, args.data, split=args.split, out=args.out, options=options)
    _print_outputs(result)
    return 0


def _ensemble(args) -> int:
    from dirtymnist.infer.predict import ensemble

    result = ensemble(args.probs, args.data, weights=_weights(args.weights), average=args.average,
                      thresholds=args.thresholds, out=args.out, blend=args.blend)
    _print_outputs(result)
    return 0


def _evaluate_tta(args) -> int:
    from dirtymnist.infer.predict import evaluate_tta
    from dirtymnist.rundir import RunDir

    print(evaluate_tta(args.run, RunDir(args.run).data_dir(args.data), presets=args.tta,
                       batch_size=args.batch_size, cache_dir=args.cache_dir, max_rows=args.max_rows).format())
    return 0


def _thresholds(args) -> int:
    from dirtymnist.infer.thresholds import fit_thresholds
    from dirtymnist.rundir import RunDir

    r = fit_thresholds(args.run, RunDir(args.run).data_dir(args.data), out=args.out)
    print(f"OOF rows {r.rows}: label_acc at 0.5 {r.acc_at_half:.5f} -> fitted {r.acc_fitted:.5f}")
    print(f"count-aware decoding (10-14 letters): at 0.5 {r.acc_count_half:.5f}, "
          f"fitted {r.acc_count_fitted:.5f} -> {'helps' if r.thresholds.decode == 'count' else 'does not help'}")
    print(f"wrote {r.path} (decode: {r.thresholds.decode})")
    return 0


def _evaluate(args) -> int:
    from dirtymnist.infer.evaluate import evaluate_submission

    print(evaluate_submission(args.submission, args.answer).format())
    return 0


def _export(args) -> int:
    from dirtymnist.deliver.export import export_run

    for e in export_run(args.run, args.out, args.format, checkpoint=args.checkpoint):
        print(f"{e.onnx}  (max |onnxruntime - torch| {e.max_abs_diff:.1e}; settings {e.meta.name})")
    return 0
