"""The probe and its evaluation: fit -> cross-validate -> calibrate thresholds -> evaluate -> save.

Every score is the float64 decision function (log-odds); probability >= 0.5 <=> score >= 0.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import scipy
import scipy.sparse as sp
from scipy.special import expit
from threadpoolctl import threadpool_limits

import common
from sweeplib import intervals
from sweeplib import lockstep
from sweeplib import owned
from sweeplib import solver_check
from sweeplib import base
from sweeplib import npyio
from sweeplib.splits import build_mix, eval_sets

SCHEMA_VERSION = 1
TOP_FEATURES = 20      # strongest weights listed per step (standardized units)


# --------------------------------------------------------------------------------------------
# Fit
# --------------------------------------------------------------------------------------------
def make_pipeline(cfg, seed):
    """StandardScaler + LogisticRegression as configured.

    The scaler divides by the standard deviation without centring, so sparse input stays
    sparse; for L2, fit() solves the centred problem and folds the centring into the
    intercept (see lbfgs_logistic).
    """
    from sklearn.linear_model import LogisticRegression    # scikit-learn: imported when used
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    solver = "lbfgs" if cfg["penalty"] == "l2" else "saga"
    clf = LogisticRegression(C=cfg["C"], l1_ratio=0.0 if cfg["penalty"] == "l2" else 1.0,
                             solver=solver, max_iter=cfg["max_iter"], random_state=seed,
                             tol=cfg.get("tol", common.DEFAULTS["tol"]))
    return Pipeline([("scaler", StandardScaler(with_mean=False)), ("clf", clf)])


def lbfgs_logistic(X, y, mean, scale, C, *, sample_weight=None, max_iter=1000, tol=1e-4):
    """L2 logistic regression on standardized data, without ever densifying or centring X.

    Optimizes exactly the problem of StandardScaler() + LogisticRegression(lbfgs) on dense
    data: weights act on (x - mean) / scale, written as X @ (w / scale) - mean . (w / scale),
    so the solver sees the same, well-conditioned problem as the dense reference. (Dropping
    the centring gives the same optimum in theory, but the solver then stops early along the
    ill-conditioned intercept direction, which moves the scores of out-of-distribution rows.)
    Objective sum(sw * logloss) / sum(sw) + ||w||^2 / (2 C sum(sw)) and stopping rule
    (gtol=tol, ftol=64 eps) as scikit-learn's lbfgs; products with X in float32, everything
    else float64. Returns (w in standardized units, intercept for centred data, n_iter,
    converged).
    """
    from scipy.optimize import minimize
    n, p = X.shape
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    total = sw.sum()
    sign = np.where(y == 1, 1.0, -1.0)
    inv_scale = 1.0 / scale
    mu = mean * inv_scale
    Xt = X.T                            # CSC view: no copy

    def fg(theta):
        w, b = theta[:p], theta[p]
        z = np.asarray(X @ (w * inv_scale).astype(np.float32), dtype=np.float64) + (b - mu @ w)
        loss = np.dot(sw, np.logaddexp(0.0, -sign * z)) / total + np.dot(w, w) / (2 * C * total)
        r = sw * (expit(z) - (y == 1)) / total
        g = np.empty(p + 1)
        g[p] = r.sum()
        g[:p] = (np.asarray(Xt @ r.astype(np.float32), dtype=np.float64) * inv_scale
                 - mu * g[p] + w / (C * total))
        return loss, g

    res = minimize(fg, np.zeros(p + 1), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "maxls": 50, "gtol": tol,
                            "ftol": 64 * np.finfo(float).eps})
    return res.x[:p], float(res.x[p]), int(res.nit), bool(res.success)


def fit(pipe, X, y, sample_weight=None):
    """Fit a pipeline; return (pipe, converged, n_iter) without letting warnings escape.

    L2 probes are solved by lbfgs_logistic (the centred, standardized problem of the dense
    reference; float32 data) and stored as StandardScaler(with_mean=False) + a
    LogisticRegression whose intercept absorbs the centring: the same function of x as
    StandardScaler() + LogisticRegression fitted densely. L1 probes use scikit-learn's saga.
    """
    if pipe[-1].l1_ratio == 0.0:
        return fit_l2(pipe, X, y, sample_weight)[:3]
    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        pipe.fit(X, y, clf__sample_weight=sample_weight)
    n_iter = int(np.max(pipe[-1].n_iter_))
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return pipe, converged, n_iter


def fit_l2(pipe, X, y, sample_weight=None, certify=False):
    """The L2 branch of fit(); returns (pipe, converged, n_iter, solver record or None); with
    certify, the record holds the stopping point's duality gap (solver_check.certificate)."""
    scaler, clf = pipe[0], pipe[-1]
    scaler.fit(X)
    scale = np.ones(X.shape[1]) if scaler.scale_ is None else scaler.scale_
    mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
    w, b, n_iter, converged = lbfgs_logistic(
        X, y, mean, scale, clf.C, sample_weight=sample_weight, max_iter=clf.max_iter,
        tol=clf.tol)
    set_l2_solution(pipe, w, b - np.dot(mean / scale, w), n_iter, X.shape[1])
    solver = None
    if certify:
        solver = lockstep.certify_one(X, y, sample_weight, clf.C, clf.tol, clf.max_iter,
                                      mean, scale, w, b, n_iter, converged)
    return pipe, converged, n_iter, solver


def set_l2_solution(pipe, w, intercept, n_iter, n_features, scaler=None):
    """Store an L2 solution (standardized weights, intercept for uncentred data) in a
    pipeline; `scaler`: StandardScaler attributes computed elsewhere (lockstep)."""
    clf = pipe[-1]
    if scaler is not None:
        for key, value in scaler.items():
            setattr(pipe[0], key, value)
        pipe[0].n_features_in_ = n_features
    clf.classes_ = np.array([0, 1])
    clf.coef_ = w.reshape(1, -1)
    clf.intercept_ = np.array([intercept])
    clf.n_iter_ = np.array([n_iter], dtype=np.int32)
    clf.n_features_in_ = n_features
    return pipe


def linear_form(pipe):
    """(w, b) in input units, float64: score = X @ w + b."""
    scale = pipe[0].scale_
    w = pipe[-1].coef_.ravel().astype(np.float64)
    if scale is not None:
        w = w / scale
    return w, float(pipe[-1].intercept_[0])


def decision(pipe, X):
    """Float64 log-odds of every row (never the float32 path, whose probabilities tie)."""
    w, b = linear_form(pipe)
    return np.asarray(X @ w, dtype=np.float64).ravel() + b


# --------------------------------------------------------------------------------------------
# Plan -> fit (in parallel) -> finish
# --------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """Everything needed to fit and evaluate one step for one seed."""
    step: object
    seed: int
    cfg: dict
    mix: object                       # splits.Mix
    folds: list                       # [(train rows, validation rows)] within the mix
    sample_weight: np.ndarray | None


def subsample_stratified(strata, n, seed):
    """Exactly n rows, each stratum in proportion (largest remainders), seeded; sorted."""
    values, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    quota = counts * n / counts.sum()
    take = np.floor(quota).astype(int)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    rows = [rng.choice(np.flatnonzero(inverse == i), size=k, replace=False)
            for i, k in enumerate(take) if k]
    return np.sort(np.concatenate(rows))


def sample_weights(mix, class_weight=None, source_weight="proportional"):
    """Per-row loss weights (mean 1), or None when every row weighs the same.

    source_weight="equal": every source contributes the same total weight; "proportional":
    by its size. class_weight="balanced": AF and not-AF contribute equally.
    """
    n = len(mix.y)
    w = np.ones(n)
    if source_weight == "equal":
        sources = np.unique(mix.source)
        for s in sources:
            m = mix.source == s
            w[m] *= n / (len(sources) * m.sum())
    if class_weight == "balanced":
        for c in (0, 1):
            m = mix.y == c
            w[m] *= n / (2 * m.sum())
    return None if np.allclose(w, 1.0) else w / w.mean()


def mix_strata(mix, n_folds=None):
    """source:class labels; strata smaller than n_folds are folded into their source."""
    strata = np.char.add(np.char.add(mix.source, ":"), mix.classes)
    if n_folds:
        values, counts = np.unique(strata, return_counts=True)
        small = values[counts < n_folds]
        if len(small):
            strata = np.where(np.isin(strata, small), mix.source, strata)
    return strata


def plan_step(step, datasets, splits, cfg, seed):
    """Build a step's mix (fixed budget and loss weights from cfg) and its CV folds."""
    mix = build_mix(step, datasets, splits)
    budget = cfg.get("budget_n")
    if budget:
        if budget > len(mix.y):
            raise base.InputError(f"--budget: {budget} samples requested, but step "
                                    f"{step.number}'s mix has only {len(mix.y)}")
        mix = mix.subset(subsample_stratified(mix_strata(mix), budget, seed))
    from sklearn.model_selection import StratifiedKFold
    skf = StratifiedKFold(n_splits=cfg["cv_folds"], shuffle=True, random_state=seed)
    with warnings.catch_warnings():     # sources smaller than the folds: checked below
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        folds = [(np.sort(tr), np.sort(va))
                 for tr, va in skf.split(np.zeros(len(mix.y)), mix_strata(mix, cfg["cv_folds"]))]
    for _, va in folds:
        if len(np.unique(mix.y[va])) < 2:
            raise base.InputError(f"--cv-folds: {cfg['cv_folds']} folds leave a validation fold "
                                    f"of step {step.number} ({len(va)} rows) with one class "
                                    "only; lower --cv-folds")
    sw = sample_weights(mix, cfg.get("class_weight"), cfg.get("source_weight", "proportional"))
    return Plan(step, seed, cfg, mix, folds, sw)


class SharedMatrices:
    """The datasets' CSR arrays written once as .npy files that worker processes map, so a
    task carries file names and row indices instead of a pickled (and hashed) matrix."""

    def __init__(self, matrices):
        shm = Path("/dev/shm")
        where = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
        owned.remove_stale(where, "sweep-")       # this tool's, of a killed run (RAM on /dev/shm)
        try:
            self.folder = str(owned.make_dir(where, "sweep-", "worker data"))
        except OSError as e:
            raise base.WriteError(f"{where}: cannot write ({e.strerror or e})") from None
        self.refs = {}
        try:
            for k, A in enumerate(matrices):
                for name in ("data", "indices", "indptr"):
                    np.save(os.path.join(self.folder, f"{k}_{name}.npy"), getattr(A, name))
                self.refs[id(A)] = (self.folder, k, A.shape)
        except OSError as e:
            self.close()
            raise base.WriteError(f"{self.folder}: cannot write ({e.strerror or e})") from None

    def parts(self, mix):
        """The mix's (matrix reference, row indices) parts."""
        return [(self.refs[id(A)], idx) for A, idx in mix.parts]

    def close(self):
        """Remove the files (mapped copies stay valid until their tasks finish)."""
        shutil.rmtree(self.folder, ignore_errors=True)


_MAPPED = {}


def _matrix(ref):
    """A matrix given in-process, or mapped from a SharedMatrices reference (cached)."""
    if sp.issparse(ref):
        return ref
    folder, k, shape = ref
    if (folder, k) not in _MAPPED:
        for key in [key for key in _MAPPED if key[0] != folder]:
            del _MAPPED[key]                      # files of an earlier batch
        arrays = [np.load(os.path.join(folder, f"{k}_{n}.npy"), mmap_mode="r")
                  for n in ("data", "indices", "indptr")]
        _MAPPED[(folder, k)] = sp.csr_matrix(tuple(arrays), shape=shape, copy=False)
    return _MAPPED[(folder, k)]


def rows_matrix(parts, subset, rows):
    """Rows `rows` (ascending) of the mix formed by parts (and a fixed-budget subset), built
    with one copy straight from the datasets."""
    lengths = [len(idx) for _, idx in parts]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    global_rows = rows if subset is None else subset[rows]
    blocks = []
    for (ref, idx), lo, hi in zip(parts, offsets[:-1], offsets[1:]):
        sel = global_rows[(global_rows >= lo) & (global_rows < hi)] - lo
        if len(sel):
            blocks.append(_matrix(ref)[idx[sel]])
    return sp.vstack(blocks, format="csr") if len(blocks) > 1 else blocks[0].tocsr()


def fit_task(cfg, seed, parts, subset, y, rows, score_rows, sample_weight):
    """One unit of work: fit a fresh probe on some rows of a mix (single-threaded BLAS) and
    score `score_rows` with it; returns (pipe, converged, n_iter, float64 scores, solver).

    Every fit starts from zero weights: warm starting a fold from a model that saw its
    validation rows stops the solver at once near that model and leaks (measured: CV AUROC
    1.000 instead of 0.97).
    """
    with threadpool_limits(1):
        sw = None if sample_weight is None else sample_weight[rows]
        X, pipe = rows_matrix(parts, subset, rows), make_pipeline(cfg, seed)
        if pipe[-1].l1_ratio == 0.0:
            pipe, converged, n_iter, solver = fit_l2(pipe, X, y[rows], sw, certify=True)
        else:
            pipe, converged, n_iter = fit(pipe, X, y[rows], sw)
            solver = solver_check.record(n_iter, converged, pipe[-1].tol, cfg["max_iter"])
        scores = decision(pipe, rows_matrix(parts, subset, score_rows))
    return pipe, converged, n_iter, scores, solver


def _tasks(plans, shared=None):
    """Every fit of every plan as a joblib task: the full mix first, then the folds."""
    for plan in plans:
        parts = shared.parts(plan.mix) if shared else plan.mix.parts
        everything = np.arange(len(plan.mix.y))
        for rows, score_rows in [(everything, everything)] + list(plan.folds):
            yield joblib.delayed(fit_task)(plan.cfg, plan.seed, parts, plan.mix.rows,
                                           plan.mix.y, rows, score_rows, plan.sample_weight)


def execute(plans, jobs=1):
    """Fit every task of every plan; returns per plan [(pipe, converged, n_iter, scores,
    solver)], the full-mix fit first, then the folds.

    On this machine, L2 plans are fitted in lockstep in this process (lockstep.py; --jobs =
    threads for its products); L1 plans, and every plan when joblib's backend is remote
    (--dask-scheduler), go to joblib as one task per fit: local worker processes map the
    matrices from files written once per batch, remote tasks get the matrices themselves."""
    fitted = [None] * len(plans)
    backend = joblib.parallel.get_active_backend()[0].__class__.__name__
    local = backend in ("LokyBackend", "MultiprocessingBackend", "ThreadingBackend",
                        "SequentialBackend")
    if local and lockstep.HAVE_KERNELS:
        for i, results in enumerate(lockstep.run_plans(plans, lockstep.thread_count(jobs))):
            if results is not None:
                fitted[i] = [_from_lockstep(plans[i], r) for r in results]
    rest = [i for i, f in enumerate(fitted) if f is None]
    if rest:
        for i, f in zip(rest, _execute_tasks([plans[i] for i in rest], jobs)):
            fitted[i] = f
    return fitted


def _from_lockstep(plan, r):
    """A lockstep result (lockstep.run_plans) as (pipe, converged, n_iter, scores, solver)."""
    pipe = set_l2_solution(make_pipeline(plan.cfg, plan.seed), r["coef"], r["intercept"],
                           r["n_iter"], plan.mix.n_features, scaler=r["scaler"])
    return pipe, r["converged"], r["n_iter"], r["scores"], r["solver"]


def _execute_tasks(plans, jobs=1):
    """One joblib batch of per-fit tasks (see execute)."""
    owners = [i for i, plan in enumerate(plans) for _ in range(len(plan.folds) + 1)]
    backend = joblib.parallel.get_active_backend()[0].__class__.__name__
    local_workers = (backend in ("LokyBackend", "MultiprocessingBackend")
                     and joblib.effective_n_jobs(jobs) > 1)
    shared = None
    if local_workers:
        unique = {id(A): A for plan in plans for A, _ in plan.mix.parts}
        shared = SharedMatrices(list(unique.values()))
    try:
        out = joblib.Parallel(n_jobs=jobs)(_tasks(plans, shared))
    finally:
        if shared:
            shared.close()
    fitted = [[] for _ in plans]
    for i, res in zip(owners, out):
        fitted[i].append(res)
    return fitted


def cv_summary(plan, fitted):
    """Out-of-fold scores, fold AUROCs and convergence from a plan's fitted folds."""
    from sklearn.metrics import roc_auc_score
    mix = plan.mix
    oof = np.empty(len(mix.y), dtype=np.float64)
    aurocs, converged = [], True
    for (_, va), (_, conv, _, scores, _) in zip(plan.folds, fitted[1:]):
        oof[va] = scores
        aurocs.append(float(roc_auc_score(mix.y[va], scores)))
        converged &= conv
    return {"oof": oof, "fold_auroc": aurocs, "converged": bool(converged),
            "n_iter": [int(f[2]) for f in fitted[1:]]}


def fpr_thresholds(neg_scores, targets=common.FPR_TARGETS):
    """Log-odds threshold per target FPR (%): flagging score >= t keeps the FPR on these
    negatives at or below the target."""
    desc = np.sort(np.asarray(neg_scores, dtype=np.float64))[::-1]
    out = {}
    for pct in targets:
        k = int(np.floor(pct / 100 * len(desc)))
        out[str(pct)] = float(np.nextafter(desc[k], np.inf)) if k < len(desc) else float(desc[-1])
    return out


# --------------------------------------------------------------------------------------------
# Evaluate
# --------------------------------------------------------------------------------------------
def _rate(flags):
    """Mean of a boolean array, or None when empty."""
    return float(np.mean(flags)) if len(flags) else None


def evaluate_set(score, y, classes, thresholds, reference_neg=None, reference_name=None):
    """Every metric of one eval set from its scores; AUROC only where both classes exist."""
    from sklearn.metrics import roc_auc_score
    af, neg = score[y == 1], score[y == 0]
    out = {
        "n_samples": int(len(y)),
        "af_samples": int(len(af)),
        "accuracy": float(np.mean((score >= 0) == (y == 1))),
        "mean_score": float(np.mean(expit(score))),
        "detection_rate": _rate(af >= 0),
    }
    if len(af) and len(neg):
        out["auroc"], out["auroc_note"] = float(roc_auc_score(y, score)), None
    else:
        only = "AF" if len(af) else "negative"
        out["auroc"] = None
        out["auroc_note"] = (f"undefined: all {len(y)} samples are {only} (single class); "
                             "see detection_rate, recall_at_fpr, auroc_vs_reference_negatives")
    out["recall_at_fpr"] = {
        pct: {"threshold": t, "recall": _rate(af >= t), "eval_fpr": _rate(neg >= t)}
        for pct, t in thresholds.items()}
    if len(af) and not len(neg) and reference_neg is not None and len(reference_neg):
        yy = np.r_[np.ones(len(af)), np.zeros(len(reference_neg))]
        out["auroc_vs_reference_negatives"] = float(roc_auc_score(yy, np.r_[af, reference_neg]))
        out["reference_negatives"] = reference_name
    else:
        out["auroc_vs_reference_negatives"] = None
        out["reference_negatives"] = None
    per_class = {}
    for cls in np.unique(classes):
        s = score[classes == cls]
        per_class[str(cls)] = {
            "n": int(len(s)), "mean_score": float(np.mean(expit(s))),
            "flagged_at_0.5": float(np.mean(s >= 0)),
            **{f"flagged_at_fpr_{p}": float(np.mean(s >= t)) for p, t in thresholds.items()}}
    out["per_class"] = per_class
    return out


HEADLINE_ORDER = ("auroc", "auroc_vs_reference_negatives", "detection_rate")


def headline_metric(metrics):
    """The metric a set is judged by: AUROC where defined, else AUROC vs reference negatives,
    else detection rate (None when none is defined)."""
    return next((m for m in HEADLINE_ORDER if metrics.get(m) is not None), None)


def flat_metrics(entry):
    """The headline metrics of an evaluation entry as one flat dict (None where undefined)."""
    out = {k: entry.get(k) for k in ("auroc", "auroc_vs_reference_negatives", "detection_rate",
                                     "accuracy")}
    for pct, r in entry["recall_at_fpr"].items():
        out[f"recall_at_fpr_{pct}"] = r["recall"]
        out[f"eval_fpr_{pct}"] = r["eval_fpr"]
    return out


def metric_estimates(score, y, thresholds, reference_neg=None):
    """Estimate (value + what its interval needs) of every flat metric of one eval set, with
    the definitions of evaluate_set."""
    af, neg = score[y == 1], score[y == 0]
    est = {"auroc": intervals.auroc_estimate(af, neg),
           "detection_rate": intervals.proportion_estimate(af >= 0),
           "accuracy": intervals.proportion_estimate((score >= 0) == (y == 1))}
    if len(af) and not len(neg) and reference_neg is not None:
        est["auroc_vs_reference_negatives"] = intervals.auroc_estimate(af, reference_neg)
    for pct, t in thresholds.items():
        est[f"recall_at_fpr_{pct}"] = intervals.proportion_estimate(af >= t)
        est[f"eval_fpr_{pct}"] = intervals.proportion_estimate(neg >= t)
    return {k: v for k, v in est.items() if v is not None}


def set_estimates(scores, name, reference, thresholds):
    """metric_estimates of one eval set from a step's saved scores (reference negatives from
    the reference set's scores in the same step)."""
    s, y = scores[name]["score"], scores[name]["label"]
    ref_neg = None
    if reference and reference in scores:
        ref_neg = scores[reference]["score"][scores[reference]["label"] == 0]
    return metric_estimates(s, y, thresholds, ref_neg)


def add_confidence_intervals(evaluation, scores, thresholds):
    """Attach a 95 % interval to every flat metric of every eval set (see intervals.py)."""
    for name, entry in evaluation.items():
        est = set_estimates(scores, name, entry.get("reference_negatives"), thresholds)
        entry["ci"] = {k: intervals.interval(e) for k, e in est.items()}
    return evaluation


# --------------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------------
def finish_step(plan, fitted, datasets, splits):
    """Score every eval set with the plan's probe and assemble (record, scores, pipe)."""
    pipe, converged, n_iter, train_scores, _ = fitted[0]
    cv = cv_summary(plan, fitted)
    record, scores, pipe = _evaluate_step(plan.step, datasets, splits, plan.cfg, plan.mix, pipe,
                                          converged, n_iter, cv, train_scores)
    record["solver"] = {"final": fitted[0][4], "cv_folds": [f[4] for f in fitted[1:]]}
    return record, scores, pipe


def run_step(step, datasets, splits, cfg, seed, jobs=1):
    """Plan, fit and evaluate one step; return (record, scores, pipe)."""
    plan = plan_step(step, datasets, splits, cfg, seed)
    return finish_step(plan, execute([plan], jobs)[0], datasets, splits)


def _evaluate_step(step, datasets, splits, cfg, mix, pipe, converged, n_iter, cv, train_scores):
    """Score every eval set with a fitted probe and assemble the step record."""
    thresholds = fpr_thresholds(cv["oof"][mix.y == 0])
    train_pred = train_scores >= 0
    scores = {}
    for name, ds, idx in eval_sets(datasets, splits):
        scores[name] = {"score": decision(pipe, ds.X[idx]), "label": ds.y[idx],
                        "class": ds.classes[idx], "row": idx}
    evaluation = {}
    for name in scores:
        spec = common.DATASETS[name]
        ref = spec.reference if spec.reference in scores else None
        ref_neg = None
        if ref:
            ref_neg = scores[ref]["score"][scores[ref]["label"] == 0]
        evaluation[name] = evaluate_set(scores[name]["score"], scores[name]["label"],
                                        scores[name]["class"], thresholds, ref_neg, ref)
    clf = pipe[-1]
    coef = clf.coef_.ravel()
    order = np.argsort(-np.abs(coef), kind="stable")[:TOP_FEATURES]
    ids = np.asarray(cfg["feature_ids"]) if cfg.get("feature_ids") else np.arange(len(coef))
    record = {
        "step": step.number,
        "name": step.slug,
        "question": step.question,
        "training_data": list(step.training),
        "n_training_samples": int(len(mix.y)),
        "n_training_af": int(mix.y.sum()),
        "sample_weighting": {"class_weight": cfg.get("class_weight"),
                             "source_weight": cfg.get("source_weight", "proportional"),
                             "budget_n": cfg.get("budget_n")},
        "training_breakdown": mix.breakdown(),
        "n_features": int(mix.n_features),
        "train_accuracy": float(np.mean(train_pred == (mix.y == 1))),
        "cv_auroc_mean": float(np.mean(cv["fold_auroc"])),
        "cv_auroc_std": float(np.std(cv["fold_auroc"])),
        "cv_auroc_folds": cv["fold_auroc"],
        "cv_converged": cv["converged"],
        "cv_n_iter": cv["n_iter"],
        "converged": converged,
        "n_iter": n_iter,
        "n_nonzero_weights": int(np.count_nonzero(coef)),
        "top_features": [{"id": int(ids[i]), "weight": float(coef[i])} for i in order],
        "top100_ids": [int(ids[i]) for i in np.argsort(-np.abs(coef), kind="stable")[:100]],
        "thresholds": {"source": "out-of-fold CV scores of the training negatives",
                       "log_odds": thresholds},
        "evaluation": evaluation,
    }
    scores["_oof"] = {"score": cv["oof"], "label": mix.y, "class": mix.classes,
                      "row": np.arange(len(mix.y)), "source": mix.source}
    scores["_coef"] = {"coef": coef, "feature_ids": ids}
    return record, scores, pipe


# --------------------------------------------------------------------------------------------
# Save / load
# --------------------------------------------------------------------------------------------
def output_paths(results_dir, step):
    """The three files of one step: JSON record, per-sample scores, probe."""
    results_dir = Path(results_dir)
    return {"json": results_dir / f"step_{step.number}_{step.slug}.json",
            "scores": results_dir / f"step_{step.number}_scores.npz",
            "probe": results_dir / f"step_{step.number}_probe.pkl"}


def versions():
    """Versions of the packages that produce the numbers."""
    import sklearn
    return {"python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
            "joblib": joblib.__version__}


def scores_to_npz_bytes(scores, run_id):
    """Serialize per-sample scores (flat keys '<set>__<field>') to npz bytes."""
    arrays = {"run_id": np.array(run_id)}
    for name, fields in scores.items():
        for key, arr in fields.items():
            arr = np.asarray(arr)
            arrays[f"{name}__{key}"] = arr.astype(str) if arr.dtype.kind in "OU" else arr
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def save_step(results_dir, step, record, scores, pipe, run_id):
    """Write scores, probe, then the JSON record (the commit point), each atomically."""
    paths = output_paths(results_dir, step)
    npz_bytes = scores_to_npz_bytes(scores, run_id)
    base.atomic_write(paths["scores"], npz_bytes)
    buf = io.BytesIO()
    joblib.dump({"pipeline": pipe, "feature_ids": record["config"].get("feature_ids"),
                 "config": record["config"], "run_id": run_id, "step": step.number}, buf)
    probe_bytes = buf.getvalue()
    base.atomic_write(paths["probe"], probe_bytes)
    record["files"] = {"scores": paths["scores"].name, "probe": paths["probe"].name,
                       "probe_sha256": hashlib.sha256(probe_bytes).hexdigest(),
                       "scores_sha256": hashlib.sha256(npz_bytes).hexdigest()}
    base.atomic_write(paths["json"], (json.dumps(record, indent=2) + "\n").encode())
    return paths


def load_scores(path, run_id=None):
    """Per-sample scores back as {set: {field: array}}; checks the run id when given. Keys are
    '<set>__<field>': set names start with a letter, the tool's own entries with '_'."""
    try:
        with base.open_regular(path, "scores file") as f, \
                np.load(f, allow_pickle=False) as z:
            if run_id is not None and str(z["run_id"]) != run_id:
                raise base.InputError(f"{path}: scores belong to run {z['run_id']}, "
                                        f"the step JSON to run {run_id}")
            out = {}
            for key in z.files:
                if "__" in key:
                    name, fld = key.rsplit("__", 1)
                    out.setdefault(name, {})[fld] = z[key]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise base.InputError(f"{path}: unreadable scores file "
                                f"({str(e)[:120] or type(e).__name__})") from None
    return out


def load_probe(json_path):
    """Load a step's probe after checking its sha256 against the step JSON (trusted-local only)."""
    from sweeplib import results_read
    json_path = Path(json_path)
    record = results_read.read_record(json_path)
    probe_path = json_path.parent / f"step_{record['step']}_probe.pkl"
    if record["files"].get("probe") != probe_path.name:
        raise base.InputError(f"{json_path}: files.probe is not {probe_path.name}")
    data = npyio.read_small_file(probe_path, "probe file", results_read.MAX_JSON_BYTES)
    digest = hashlib.sha256(data).hexdigest()
    if digest != str(record["files"].get("probe_sha256")):
        raise base.InputError(f"{probe_path}: sha256 {digest[:12]}... does not match the "
                                f"{str(record['files'].get('probe_sha256'))[:12]}... recorded in "
                                f"{json_path.name}; refusing to unpickle it")
    return joblib.load(io.BytesIO(data))


def repeat_summary(record, seed):
    """The per-repeat numbers kept for the spread across seeds."""
    return {"seed": int(seed), "cv_auroc_mean": record["cv_auroc_mean"],
            "converged": bool(record["converged"] and record["cv_converged"]),
            "metrics": {n: flat_metrics(e) for n, e in record["evaluation"].items()}}
