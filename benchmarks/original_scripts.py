"""python benchmarks/original_scripts.py --cache-dir DIR --step K --out metrics.json

One step of the original research scripts, emulated for timing (benchmarks/bench_sweep.py runs
steps 0-3 one after another, each in its own process, as the four scripts ran): every dataset
loaded dense with np.load and cast to float64, the step's training mix stacked densely,
StandardScaler() + LogisticRegression(C=10, max_iter=1000) scored with 5-fold
cross_val_score (ROC AUC) and fitted on the whole mix, then every eval set scored with
decision_function. The mixes and eval rows are this tool's (make_splits,
training_rows), so both do the same work on the same rows; BLAS threads are left at
the library's default, as in the original scripts.

Writes {"step", "n_train", "cv_auroc", "fit_s", "n_iter", "converged", "sets": {name: {"score",
"label"}}} (float64 scores as lists) for the benchmark's agreement check.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common  # noqa: E402
from sweeplib import data
from sweeplib.splits import make_splits, training_rows

C, MAX_ITER, FOLDS = 10.0, 1000, 5


def labels_only(cache_dir, layer):
    """Datasets with labels and classes but no activations (enough for the splits)."""
    out = {}
    for name in common.DATASETS:
        acts, lab = data.dataset_files(cache_dir, layer, common.DATASETS[name])
        if acts.exists() and lab is not None:
            y, classes = data.load_labels(lab, name)
            out[name] = data.Dataset(name, None, y, classes, {"activations": acts,
                                                                 "labels": lab})
    return out


def main(argv=None):
    """Run one emulated step script; exit 0."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache-dir", type=Path, required=True, help="cache root")
    p.add_argument("--layer", type=int, default=40, help="SAE layer")
    p.add_argument("--step", type=int, required=True, help="step number (0-3)")
    p.add_argument("--seed", type=int, default=42, help="seed of the splits")
    p.add_argument("--eval-fraction", type=float, default=0.2, help="held-out share")
    p.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    args = p.parse_args(argv)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    meta = labels_only(args.cache_dir, args.layer)
    splits = make_splits(meta, args.eval_fraction, args.seed)
    dense = {n: np.load(d.files["activations"]).astype(np.float64) for n, d in meta.items()}
    step = common.step_spec(args.step)
    parts = training_rows(step, splits)
    X = np.vstack([dense[n][idx] for n, idx in parts])
    y = np.concatenate([meta[n].y[idx] for n, idx in parts])
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=MAX_ITER))
        cv = cross_val_score(model, X, y, cv=FOLDS, scoring="roc_auc")
        model.fit(X, y)
    out = {"step": args.step, "n_train": int(len(y)), "cv_auroc": float(np.mean(cv)),
           "fit_s": time.perf_counter() - t0, "n_iter": int(np.max(model[-1].n_iter_)),
           "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught),
           "sets": {}}
    for name in data.eval_names(meta):
        if len(splits[name].eval):
            idx = splits[name].eval
            out["sets"][name] = {"score": model.decision_function(dense[name][idx]).tolist(),
                                 "label": meta[name].y[idx].tolist()}
    args.out.write_text(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
