"""The probe: fit -> cross-validation plan -> thresholds. A StandardScaler + LogisticRegression
pipeline, the L2 problem solved exactly as the dense reference on sparse float32 data.

Every score is the float64 decision function (log-odds); probability >= 0.5 <=> score >= 0.
The fits of a run are made in execution.py (lockstep.py for L2: all at once); lbfgs_logistic
here is the per-fit reference they are checked against.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from common import DEFAULTS, FPR_TARGETS
from sweeplib import lockstep
from sweeplib.base import InputError
from sweeplib.splits import build_mix, check_budget_size, mix_strata, subsample_stratified


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
    solver = "lbfgs" if cfg.penalty == "l2" else "saga"
    clf = LogisticRegression(C=cfg.C, l1_ratio=0.0 if cfg.penalty == "l2" else 1.0,
                             solver=solver, max_iter=cfg.max_iter, random_state=seed,
                             tol=cfg.tol)
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
        """Objective and gradient at theta (weights, intercept)."""
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
                   options=lockstep.solver_options(max_iter, tol))
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
# Plan: a step's mix, its CV folds and loss weights
# --------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """Everything needed to fit and evaluate one step for one seed."""
    step: object
    seed: int
    cfg: object                       # config.RunConfig
    mix: object                       # splits.Mix
    folds: list                       # [(train rows, validation rows)] within the mix
    sample_weight: np.ndarray | None


def sample_weights(mix, class_weight=None, source_weight=DEFAULTS["source_weight"]):
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


def plan_step(step, datasets, splits, cfg, seed):
    """Build a step's mix (fixed budget and loss weights from cfg) and its CV folds."""
    mix = build_mix(step, datasets, splits)
    budget = cfg.budget_n
    if budget:
        check_budget_size(budget, step, len(mix.y))
        mix = mix.subset(subsample_stratified(mix_strata(mix), budget, seed))
    from sklearn.model_selection import StratifiedKFold
    skf = StratifiedKFold(n_splits=cfg.cv_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():     # sources smaller than the folds: checked below
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        folds = [(np.sort(tr), np.sort(va))
                 for tr, va in skf.split(np.zeros(len(mix.y)), mix_strata(mix, cfg.cv_folds))]
    for _, va in folds:
        if len(np.unique(mix.y[va])) < 2:
            raise InputError(f"--cv-folds: {cfg.cv_folds} folds leave a validation fold "
                                    f"of step {step.number} ({len(va)} rows) with one class "
                                    "only; lower --cv-folds")
    sw = sample_weights(mix, cfg.class_weight, cfg.source_weight)
    return Plan(step, seed, cfg, mix, folds, sw)


# --------------------------------------------------------------------------------------------
# Cross-validation and thresholds
# --------------------------------------------------------------------------------------------
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


def fpr_thresholds(neg_scores, targets=FPR_TARGETS):
    """Log-odds threshold per target FPR (%): flagging score >= t keeps the FPR on these
    negatives at or below the target."""
    desc = np.sort(np.asarray(neg_scores, dtype=np.float64))[::-1]
    out = {}
    for pct in targets:
        k = int(np.floor(pct / 100 * len(desc)))
        out[str(pct)] = float(np.nextafter(desc[k], np.inf)) if k < len(desc) else float(desc[-1])
    return out
