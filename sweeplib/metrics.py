"""Evaluating a fitted probe: every metric of every eval set, the headline rule, the estimates
behind every interval, and the step record a finished plan becomes.

Scores are the float64 decision function (log-odds); ranking never uses float32 probabilities.
AUROC is defined only where a set has both classes; an all-AF set gets its AUROC against the
held-out negatives of its reference set (same activation regime) instead.
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit

from sweeplib import intervals, power
from sweeplib.probe import cv_summary, decision, fpr_thresholds, linear_form
from sweeplib.splits import eval_sets

TOP_FEATURES = 20      # strongest weights listed per step (standardized units)


# --------------------------------------------------------------------------------------------
# One eval set
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


def repeat_summary(record, seed, scores=None):
    """The per-repeat numbers kept for the spread across seeds (with scores: also the AUROC
    of the train rows' out-of-fold scores, the verdict's in-distribution evidence)."""
    est = power.oof_estimate(scores)[0] if scores is not None else None
    return {"seed": int(seed), "cv_auroc_mean": record["cv_auroc_mean"],
            "converged": bool(record["converged"] and record["cv_converged"]),
            "metrics": {n: flat_metrics(e) for n, e in record["evaluation"].items()},
            **({"oof_train_auroc": est.value} if est is not None else {})}


# --------------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------------
def portable_probe(pipe, feature_ids):
    """The probe as plain arrays, saved in the scores file so it can be used without
    unpickling: score = X[:, feature_ids] @ weights + intercept (weights in input units, float64:
    probe.linear_form), with the scaler's scale that divided the standardized weights."""
    w, b = linear_form(pipe)
    scale = pipe[0].scale_
    return {"weights": w, "intercept": np.array([b]),
            "scale": np.ones(len(w)) if scale is None else np.asarray(scale, dtype=np.float64),
            "feature_ids": np.asarray(feature_ids, dtype=np.int64)}



def finish_step(plan, fitted, datasets, splits):
    """Score every eval set with the plan's probe and assemble (record, scores, pipe)."""
    pipe, converged, n_iter, train_scores, _ = fitted[0]
    cv = cv_summary(plan, fitted)
    record, scores, pipe = _evaluate_step(plan.step, datasets, splits, plan.cfg, plan.mix, pipe,
                                          converged, n_iter, cv, train_scores)
    record["solver"] = {"final": fitted[0][4], "cv_folds": [f[4] for f in fitted[1:]]}
    return record, scores, pipe



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
        spec = datasets[name].spec
        ref = spec.reference if spec.reference in scores else None
        ref_neg = None
        if ref:
            ref_neg = scores[ref]["score"][scores[ref]["label"] == 0]
        evaluation[name] = evaluate_set(scores[name]["score"], scores[name]["label"],
                                        scores[name]["class"], thresholds, ref_neg, ref)
    clf = pipe[-1]
    coef = clf.coef_.ravel()
    order = np.argsort(-np.abs(coef), kind="stable")[:TOP_FEATURES]
    ids = np.asarray(cfg.feature_ids) if cfg.feature_ids else np.arange(len(coef))
    record = {
        "step": step.number,
        "name": step.slug,
        "question": step.question,
        "training_data": list(step.training),
        "n_training_samples": int(len(mix.y)),
        "n_training_af": int(mix.y.sum()),
        "sample_weighting": {"class_weight": cfg.class_weight,
                             "source_weight": cfg.source_weight, "budget_n": cfg.budget_n},
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
    scores["_probe"] = portable_probe(pipe, ids)
    return record, scores, pipe
