"""Degenerate data: refuse what cannot give a meaningful number, warn loudly about what is
suspicious. Warnings go to the console (also under --quiet) and into every step JSON
(`data_warnings`), and the report's header lists them.

Rules (docs/REFERENCE.md, "Errors and messages"):
- a dataset with no active feature in any row: refused (with --feature-ids: a warning, the
  selection may miss a dataset's features);
- rows with no active feature: warning (count and share);
- a value above OUTLIER_WARN x the cache's own 99.9th percentile of active |values|: warning;
  above OUTLIER_REFUSE x: refused (one such value made every AUROC 0.500 with converged: true);
- any |value| above ABSOLUTE_REFUSE (1e18), however uniform the cache: refused. The scaler's
  variance is stored as float32 (as scikit-learn stores it), so a squared value above the
  float32 range (about 1.8e19) becomes inf and silently zeroes the feature; a cache scaled by
  1e19 changed its numbers without a word. 1e18 keeps every square (<= 1e36) and so every
  variance finite, with room to spare; SAE activations are many orders of magnitude smaller;
- an eval set that needs both classes (no reference negatives in the dataset table) with one
  class, or whose held-out part has one class (check_held_out, once the split is made):
  warning (its AUROC is undefined at every step);
- a training mix whose rows are all identical (no feature varies), or with a class smaller than
  --cv-folds: refused before anything is written;
- a fit whose weights or scores are not finite: refused (nothing is switched in); a probe with
  no non-zero weight, or an eval set whose samples all get one score: warning.
"""
from __future__ import annotations

import sys

import numpy as np
import scipy.sparse as sp

from sweeplib.base import InputError

OUTLIER_WARN = 1e3
OUTLIER_REFUSE = 1e6
ABSOLUTE_REFUSE = 1e18     # |value| above this: refused whatever the cache's scale (see above)
SAMPLE = 1_000_000         # active values sampled (evenly, deterministic) for the percentile


def _stderr(message):
    """Print a warning line to stderr."""
    print(message, file=sys.stderr)


def reference_scale(datasets):
    """99.9th percentile of |active values| over every loaded dataset (evenly subsampled), or
    None when no value is active."""
    total = sum(ds.X.nnz for ds in datasets.values())
    if not total:
        return None
    step = max(1, total // SAMPLE)
    pooled = np.concatenate([np.abs(ds.X.data[::step]) for ds in datasets.values()])
    pooled = pooled[pooled > 0]
    return float(np.quantile(pooled, 0.999)) if len(pooled) else None


def _where(ds, pos, feature_ids):
    """'row r, feature f' of a position in a CSR matrix's data array."""
    row = int(np.searchsorted(ds.X.indptr, pos, side="right") - 1)
    col = int(ds.X.indices[pos])
    return f"row {row}, feature {col if feature_ids is None else feature_ids[col]}"


def check_datasets(datasets, feature_ids=None, warn=_stderr):
    """Refuse datasets that cannot give a meaningful number; attach (and print) warnings."""
    for name, ds in datasets.items():
        path = ds.files.get("activations", name)
        if not np.any(ds.X.data):
            if feature_ids is None:
                raise InputError(f"{path}: no active feature in any of its {ds.X.shape[0]} "
                                 "rows (all activations are zero); wrong file or failed "
                                 "extraction?")
            ds.warnings.append(f"{path}: no row has an active feature among the "
                               f"{len(feature_ids)} --feature-ids: every sample of {name} gets "
                               "the same score")
            continue
        empty = int(np.count_nonzero(np.diff(ds.X.indptr) == 0))
        if empty:
            ds.warnings.append(f"{path}: {empty} of {ds.X.shape[0]} rows "
                               f"({empty / ds.X.shape[0]:.1%}) have no active feature "
                               "(all zero)")
    ref = reference_scale(datasets)
    for name, ds in datasets.items():
        path = ds.files.get("activations", name)
        pos = int(np.argmax(np.abs(ds.X.data))) if ds.X.nnz else 0
        value = float(ds.X.data[pos]) if ds.X.nnz else 0.0
        ratio = abs(value) / ref if ref else 0.0
        where = _where(ds, pos, feature_ids) if ds.X.nnz else ""
        if ratio > OUTLIER_REFUSE:
            raise InputError(f"{path}: value {value:.3g} at {where} is {ratio:.2g} times the "
                             f"cache's 99.9th percentile of active values ({ref:.3g}); corrupt "
                             f"file? (refused above {OUTLIER_REFUSE:g} times)")
        if abs(value) > ABSOLUTE_REFUSE:
            raise InputError(f"{path}: value {value:.3g} at {where} is above the absolute limit "
                             f"{ABSOLUTE_REFUSE:g} (largest |value| of the file); the probe's "
                             "float32 statistics would overflow: wrong units or corrupt file?")
        if ratio > OUTLIER_WARN:
            ds.warnings.append(f"{path}: value {value:.3g} at {where} is {ratio:.2g} times the "
                               f"cache's 99.9th percentile of active values ({ref:.3g})")
        spec = ds.spec
        if (spec.role != "train" and spec.reference is None
                and len(np.unique(ds.y)) < 2):
            only = "AF" if ds.y[0] == 1 else "not AF"
            ds.warnings.append(f"{ds.files.get('labels', name)}: all {len(ds.y)} samples of "
                               f"{name} are {only} (one class): its AUROC is undefined at "
                               "every step")
    for ds in datasets.values():
        for w in ds.warnings:
            warn(f"warning: {w}")


def check_held_out(datasets, splits, warn=_stderr):
    """Warn (once per message) about a split dataset that needs both classes (no reference
    negatives) and has both, but whose held-out part has one: a class with a single sample is
    never held out, so a benchmark with one negative is evaluated on AF rows only."""
    for name, ds in datasets.items():
        if ds.spec.role != "split" or ds.spec.reference is not None or name not in splits:
            continue
        held = ds.y[splits[name].eval]
        if len(np.unique(ds.y)) < 2 or not len(held) or len(np.unique(held)) > 1:
            continue                    # one class in the whole set: check_datasets warned
        only = "AF" if held[0] == 1 else "not AF"
        w = (f"{ds.files.get('labels', name)}: the held-out part of {name} ({len(held)} "
             f"samples) is all {only} (one class; the other class has too few samples to hold "
             "one out): its AUROC is undefined at every step")
        if w not in ds.warnings:
            ds.warnings.append(w)
            warn(f"warning: {w}")


def check_mix(step, datasets, rows, cv_folds):
    """Refuse a step's training mix with a class smaller than --cv-folds or without any
    varying feature. rows: [(dataset name, row indices)]."""
    y = np.concatenate([datasets[n].y[idx] for n, idx in rows])
    first = datasets[rows[0][0]].files.get("labels", rows[0][0])
    counts = np.bincount(y.astype(np.int64), minlength=2)
    small = int(np.argmin(counts))
    if counts[small] < cv_folds:
        raise InputError(f"--cv-folds: {cv_folds} folds, but the training mix of step "
                         f"{step.number} ({', '.join(step.training)}) has only "
                         f"{counts[small]} {'AF' if small else 'not-AF'} sample(s); lower "
                         "--cv-folds")
    nnz = np.concatenate([np.diff(datasets[n].X.indptr)[idx] for n, idx in rows])
    if len(np.unique(nnz)) > 1:
        return
    if _rows_identical(sp.vstack([datasets[n].X[idx] for n, idx in rows], format="csr")):
        raise InputError(f"{first}: every row of the training mix of step {step.number} "
                         f"({', '.join(step.training)}) is identical (no feature varies); "
                         "cannot train a probe")


def _rows_identical(X):
    """True when every row of a CSR matrix with the same number of stored values per row
    equals the first (compared on the non-zeros: never densified)."""
    X = X.copy()
    X.sum_duplicates()
    X.eliminate_zeros()
    counts = np.diff(X.indptr)
    if len(np.unique(counts)) > 1:
        return False
    k = int(counts[0]) if len(counts) else 0
    idx, val = X.indices.reshape(X.shape[0], k), X.data.reshape(X.shape[0], k)
    return bool(np.all(idx == idx[0]) and np.all(val == val[0]))


def check_fit(label, step, scores):
    """Refuse non-finite weights or scores; return warnings about a probe that says nothing."""
    coef = np.asarray(scores["_coef"]["coef"], dtype=np.float64)
    parts = {"weights": coef, "out-of-fold scores": scores["_oof"]["score"]}
    parts.update({f"scores of {n}": v["score"] for n, v in scores.items()
                  if not n.startswith("_")})
    bad = [what for what, v in parts.items() if not np.all(np.isfinite(v))]
    if bad:
        raise InputError(f"{label}step {step.number} ({step.slug}): the fit produced non-finite "
                         f"{bad[0]}; the data are out of the range the probe can handle (see "
                         "the data warnings above)")
    out = []
    if not np.any(coef):
        out.append(f"{label}step {step.number}: every weight of the probe is zero; it gives "
                   "every sample the same score")
    for name, v in scores.items():
        s = np.asarray(v.get("score", []))
        if not name.startswith("_") and len(s) > 1 and np.ptp(s) == 0:
            out.append(f"{label}step {step.number}: every sample of {name} gets the same "
                       "score; its metrics mean nothing")
    for w in out:
        _stderr(f"warning: {w}")
    return out


def data_warnings(datasets, step_warnings=()):
    """The warnings a step JSON records: its datasets' and its own."""
    return [w for ds in datasets.values() for w in ds.warnings] + list(step_warnings)
