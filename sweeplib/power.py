"""Power of the verdict's tests: the in-distribution evidence of the training rows' out-of-fold
scores, its combination with gold_106, and the smallest change each test could detect.

    oof_estimate(scores, "train")       AUROC of one step's out-of-fold scores of one source
    change_of(name, ea, eb, alpha)      Change: a paired change with its one-sided arms
    combine([change, ...])              inverse-variance combination of independent changes
    detectable(change, alpha, ...)      Detectable: MDE at 80 % power, rows that would decide
    for_change(ea, eb, alpha, ...)      Detectable of an improvement (e.g. a method effect)

Why the out-of-fold (OOF) rows may join gold_106 (the README's "In-distribution evidence"):
every step scores the whole `train` set out of fold (each row by the CV fold model that did not
train on it), the same rows in the same order at every step, so the step-0 -> step-k change of
their AUROC is a paired change on ~25x more in-distribution rows than gold_106 has. It
measures the fitting *procedure* (fold models on (k-1)/k of the mix, whose folds differ per
step), not the final probe, and its rows carry the training labels, not hand labels. The two
estimates are independent (disjoint rows: gold_106 is never trained on), so when both measure
the same change, their inverse-variance weighted mean is a valid estimate with the smaller
variance; a heterogeneity test (the two disagree beyond their uncertainty at alpha) guards the
"same change" assumption: on disagreement the verdict falls back to gold_106 alone.
Pure functions, no I/O, no randomness.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import special, stats

from sweeplib import intervals

POWER = 0.80
OOF_SOURCE = "train"          # the training-format source scored out of fold at every step


def oof_estimate(scores, source=OOF_SOURCE):
    """(Estimate, row labels) of the AUROC of one step's out-of-fold scores on the rows of one
    source, or (None, None) when the step has no such rows or only one class among them."""
    oof = scores.get("_oof") or {}
    if "source" not in oof or "score" not in oof:
        return None, None
    keep = np.asarray(oof["source"]).astype(str) == source
    s, y = np.asarray(oof["score"], dtype=np.float64)[keep], np.asarray(oof["label"])[keep]
    est = intervals.auroc_estimate(s[y == 1], s[y == 0])
    return (est, y) if est is not None else (None, None)


# --------------------------------------------------------------------------------------------
# One change: its arms, and what it could detect
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """A change between two probes with its one-sided (1 - alpha) bounds: delta - lower_arm
    and delta + upper_arm; sd is the symmetric standard error the arms imply; model (AUROCs:
    intervals.ChangeModel) gives the standard error at other true values."""
    name: str
    delta: float
    lower_arm: float
    upper_arm: float
    sd: float
    n_rows: int
    df: int | None
    model: object = field(default=None, repr=False, compare=False)

    def sd_test(self, boundary, truth):
        """Standard error the test uses at its boundary when the data sit at a true change
        (sd where no model is known)."""
        if self.model is None:
            return self.sd
        mid = self.model.first + truth / 2
        return float(self.model.sd_pair(*np.clip([mid - boundary / 2, mid + boundary / 2],
                                                 0, 1)))

    def sd_true(self, truth):
        """Standard error of the estimate at a true change, the first probe's AUROC as
        observed (sd where no model is known)."""
        if self.model is None:
            return self.sd
        a = self.model.first
        return float(self.model.sd_pair(a, np.clip(a + truth, 0, 1)))


def change_of(name, ea, eb, alpha, paired=True):
    """Change of Estimates ea -> eb with its one-sided level-(1 - alpha) arms (the interval of
    intervals.change at two-sided level 1 - 2 alpha)."""
    d = intervals.change(ea, eb, level=1 - 2 * alpha, paired=paired)
    df, model = None, None
    if ea.kind == "auroc":
        df = min(ea.parts.m, ea.parts.n, eb.parts.m, eb.parts.n) - 1
        same = (ea.parts.m, ea.parts.n) == (eb.parts.m, eb.parts.n)
        model = intervals.change_model(ea.parts.v10, ea.parts.v01, eb.parts.v10,
                                       eb.parts.v01, paired and same)
    crit = intervals.critical_value(1 - 2 * alpha, df)
    lo, hi = d["delta"] - d["ci"][0], d["ci"][1] - d["delta"]
    return Change(name, float(d["delta"]), float(lo), float(hi),
                  float((lo + hi) / (2 * crit)), int(ea.n), df, model)


@dataclass(frozen=True)
class Combined:
    """Inverse-variance combination of independent changes, with the heterogeneity test."""
    delta: float
    lower_arm: float
    upper_arm: float
    sd: float
    weights: dict                 # name -> weight (sums to 1)
    heterogeneity_p: float        # Cochran's Q test that every part measures the same change


def combine(changes):
    """Combined of independent Changes: weights 1/sd^2, each one-sided arm the root of the
    weighted sum of the parts' squared arms (each part's arm keeps its own, possibly
    asymmetric, score interval: the MOVER construction)."""
    w = np.array([1.0 / max(c.sd, 1e-12) ** 2 for c in changes])
    w = w / w.sum()
    d = np.array([c.delta for c in changes])
    delta = float(w @ d)
    lo = float(np.sqrt(np.sum((w * [c.lower_arm for c in changes]) ** 2)))
    hi = float(np.sqrt(np.sum((w * [c.upper_arm for c in changes]) ** 2)))
    sd = float(np.sqrt(np.sum((w * [c.sd for c in changes]) ** 2)))
    q = float(np.sum((d - delta) ** 2 / np.maximum([c.sd ** 2 for c in changes], 1e-24)))
    p = float(stats.chi2.sf(q, len(changes) - 1)) if len(changes) > 1 else 1.0
    return Combined(delta, lo, hi, sd, {c.name: float(x) for c, x in zip(changes, w)}, p)


@dataclass(frozen=True)
class _Pooled:
    """The variance model of a Combined: the parts' models, weighted."""
    comb: Combined
    parts: tuple

    def sd_test(self, boundary, truth):
        """Weighted root sum of squares of the parts' sd_test."""
        return float(np.sqrt(sum((self.comb.weights[p.name] * p.sd_test(boundary, truth)) ** 2
                                 for p in self.parts)))

    def sd_true(self, truth):
        """Weighted root sum of squares of the parts' sd_true."""
        return float(np.sqrt(sum((self.comb.weights[p.name] * p.sd_true(truth)) ** 2
                                 for p in self.parts)))


def combined_change(comb, parts):
    """(Change-like, for detectable) of a Combined: its rows the parts' rows summed, its
    standard errors the weighted ones of the parts (the same true change in every part)."""
    pooled = _Pooled(comb, tuple(parts))
    return _CombinedChange(comb.delta, comb.lower_arm, comb.upper_arm, comb.sd,
                           sum(p.n_rows for p in parts), pooled)


@dataclass(frozen=True)
class _CombinedChange:
    """A Combined with what detectable needs (normal critical value: df None)."""
    delta: float
    lower_arm: float
    upper_arm: float
    sd: float
    n_rows: int
    pooled: _Pooled
    df: None = None

    def sd_test(self, boundary, truth):
        """See Change.sd_test."""
        return self.pooled.sd_test(boundary, truth)

    def sd_true(self, truth):
        """See Change.sd_true."""
        return self.pooled.sd_true(truth)


@dataclass(frozen=True)
class Detectable:
    """What a one-sided test "the true change is beyond `boundary` in `direction`" (+1:
    above, -1: below) could detect: with `power` at its alpha it shows a true change
    boundary + direction * mde; for an undecided call whose observed change lies on the
    test's side, the rows (n_rows * scale_needed) that would show it if it were the truth."""
    mde: float
    boundary: float
    direction: int
    alpha_one_sided: float
    power: float
    n_rows: int
    rows_needed: int | None
    scale_needed: float | None


def detectable(change, alpha_one_sided, boundary=0.0, direction=1, observed=None,
               power=POWER):
    """Detectable of a Change for the one-sided test at alpha_one_sided (a two-sided test at
    alpha: alpha / 2; Holm over k: alpha / (2 k)). The test decides when delta clears
    boundary by crit * sd_test (the score interval's standard error at the boundary), and
    delta ~ N(truth, sd_true^2), both from the change's variance model at the truth, so the
    MDE solves mde = crit * sd_test + z_power * sd_true at truth = boundary + direction * mde.
    Rows needed scale the variance as 1 / n (an AUROC's and a proportion's do)."""
    df = change.df
    crit = float(special.stdtrit(max(1, int(df)), 1 - alpha_one_sided)) if df else \
        float(special.ndtri(1 - alpha_one_sided))
    zp = float(special.ndtri(power))

    def needed(truth):
        """Distance from the boundary at which a true change is detected with `power`."""
        return crit * change.sd_test(boundary, truth) + zp * change.sd_true(truth)
    mde = needed(boundary)
    for _ in range(20):                   # fixed point: the sd moves slowly with the truth
        mde = needed(boundary + direction * mde)
    rows = scale = None
    dist = None if observed is None else direction * (observed - boundary)
    if dist is not None and dist > 1e-12:
        scale = (needed(observed) / dist) ** 2
        rows = int(math.ceil(change.n_rows * scale))
    return Detectable(float(mde), float(boundary), int(direction), float(alpha_one_sided),
                      power, int(change.n_rows), rows, scale)


def for_change(ea, eb, alpha, paired=True, family=1, two_sided=True, observed=None):
    """Detectable of an improvement ea -> eb of two Estimates (any test of a change between
    two probes, e.g. a method effect): two-sided at alpha over a family of `family` tests
    (Bonferroni, Holm's first step), or one-sided at alpha; observed: the change of an
    undecided call (rows needed)."""
    one = alpha / (2 * family) if two_sided else alpha / family
    return detectable(change_of("", ea, eb, one, paired), one, 0.0, 1, observed)


def as_dict(x):
    """JSON-ready dict of a Detectable, Change or Combined."""
    return asdict(x)
