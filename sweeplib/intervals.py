"""Confidence intervals and tests for the sweep's metrics, honest at small n and at 0 / 1.

Pure functions over numpy arrays: no I/O, no randomness (nothing here resamples).

* Proportions (detection rate, recall at a fixed threshold, FPR, accuracy): Clopper-Pearson
  exact intervals; a paired change between two steps on the same rows: Agresti-Min (half a
  count added to each cell of the paired 2x2 table); unpaired: Agresti-Caffo.
* AUROC: a score-type (Wilson-form) interval whose variance per unit A(1-A) is DeLong's
  nonparametric estimate shrunk towards the Hanley-McNeil model value (weight SHRINK), with a
  t critical value on min(n_pos, n_neg) - 1 degrees of freedom. At A = 0 or 1 the model value
  alone is used, so no interval has zero width.
* A change of AUROC between two probes scored on the same rows, and sums of AUROCs of
  independent sets: MOVER (Zou & Donner), which recovers the variance of each term from its
  score interval at the hypothesised bound, with DeLong's correlation (capped at MAX_RHO)
  between paired terms. Its one-sided error stays at or below the nominal level near the
  ceiling, where a Wald interval on the difference does not.
* Simulated coverage of these choices is printed by benchmarks/calibration.py --coverage and
  checked by tests/test_intervals.py; docs/REFERENCE.md gives the numbers.

Conventions: `level` is the two-sided confidence level; p-values are two-sided and
consistent with the intervals (the level-`level` interval excludes 0 <=> p < 1 - level).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

ALPHA = 0.05
LEVEL = 1 - ALPHA
SHRINK = 0.5          # weight of the Hanley-McNeil variance model against DeLong's estimate
MAX_RHO = 0.9         # cap on the correlation of two AUROCs: MOVER under-covers as it nears 1


def critical_value(level=LEVEL, df=None):
    """Two-sided critical value: normal, or Student t with df degrees of freedom (level may be
    an array)."""
    q = 0.5 + np.asarray(level, dtype=np.float64) / 2
    out = special.ndtri(q) if df is None else special.stdtrit(max(1, int(df)), q)
    return float(out) if np.ndim(out) == 0 else out


def _p_normal(stat):
    """Two-sided p-value of a z statistic."""
    return float(2 * special.ndtr(-abs(float(stat))))


# --------------------------------------------------------------------------------------------
# Proportions
# --------------------------------------------------------------------------------------------
def proportion_interval(k, n, level=LEVEL):
    """Clopper-Pearson interval of k successes in n trials (arrays allowed); nan when n == 0."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    a = (1 - level) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, special.betaincinv(k, n - k + 1, a), 0.0)
        hi = np.where(k < n, special.betaincinv(k + 1, n - k, 1 - a), 1.0)
    bad = n <= 0
    lo, hi = np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)
    if lo.ndim == 0:
        return float(lo), float(hi)
    return lo, hi


def proportion_change(flags_a, flags_b, level=LEVEL, paired=True):
    """Change of a proportion from a to b: {delta, ci, p_value}.

    paired (the same rows flagged by two probes): Agresti-Min interval, half a count added to
    each cell of the 2x2 table of (flagged by a, flagged by b); unpaired: Agresti-Caffo, one
    success and one failure added to each group."""
    a = np.asarray(flags_a, dtype=bool)
    b = np.asarray(flags_b, dtype=bool)
    z = critical_value(level)
    if paired:
        if a.shape != b.shape:
            raise ValueError("paired proportions need the same rows")
        n = a.size
        n10 = float(np.count_nonzero(a & ~b)) + 0.5
        n01 = float(np.count_nonzero(~a & b)) + 0.5
        total = n + 2.0
        d = (n01 - n10) / total
        var = ((n01 + n10) / total - d * d) / total
        delta = float(b.mean() - a.mean()) if n else float("nan")
    else:
        pa = (a.sum() + 1.0) / (a.size + 2.0)
        pb = (b.sum() + 1.0) / (b.size + 2.0)
        d = pb - pa
        var = pa * (1 - pa) / (a.size + 2.0) + pb * (1 - pb) / (b.size + 2.0)
        delta = float(b.mean() - a.mean()) if a.size and b.size else float("nan")
    sd = float(np.sqrt(max(var, 0.0)))
    lo, hi = max(-1.0, d - z * sd), min(1.0, d + z * sd)
    return {"delta": delta, "ci": [float(lo), float(hi)],
            "p_value": _p_normal(d / sd) if sd > 0 else (1.0 if d == 0 else 0.0)}


# --------------------------------------------------------------------------------------------
# AUROC
# --------------------------------------------------------------------------------------------
def _midranks(x):
    """Average ranks (1-based) along the last axis; ties share their mean rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, axis=-1, kind="stable")
    xs = np.take_along_axis(x, order, axis=-1)
    n = x.shape[-1]
    new = np.ones(xs.shape, dtype=bool)
    new[..., 1:] = xs[..., 1:] != xs[..., :-1]
    group = np.cumsum(new, axis=-1)                                 # tie-group id per position
    pos = np.broadcast_to(np.arange(1, n + 1, dtype=np.float64), xs.shape)
    flat_g = (group - 1) + n * np.arange(int(np.prod(xs.shape[:-1])) or 1).reshape(
        xs.shape[:-1] + (1,))
    sums = np.bincount(flat_g.ravel(), weights=pos.ravel(), minlength=flat_g.size)
    cnts = np.bincount(flat_g.ravel(), minlength=flat_g.size)
    avg = (sums / np.maximum(cnts, 1))[flat_g]
    out = np.empty_like(avg)
    np.put_along_axis(out, order, avg, axis=-1)
    return out


@dataclass(frozen=True)
class Auroc:
    """An AUROC with its DeLong placement values (the parts every interval here needs).

    v10[i]: share of negatives scored below positive i (ties 1/2); v01[j]: share of positives
    scored above negative j. Their means both equal the AUROC."""
    value: float
    v10: np.ndarray
    v01: np.ndarray

    @property
    def m(self):
        """Number of positives."""
        return len(self.v10)

    @property
    def n(self):
        """Number of negatives."""
        return len(self.v01)


def placements(pos, neg):
    """(v10, v01) of positive and negative scores along the last axis (batched allowed)."""
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    m, n = pos.shape[-1], neg.shape[-1]
    r_all = _midranks(np.concatenate([pos, neg], axis=-1))
    v10 = (r_all[..., :m] - _midranks(pos)) / n
    v01 = 1.0 - (r_all[..., m:] - _midranks(neg)) / m
    return v10, v01


def auroc(pos, neg):
    """Auroc of positive vs negative scores (ValueError when either is empty)."""
    pos, neg = np.ravel(pos), np.ravel(neg)
    if not len(pos) or not len(neg):
        raise ValueError("AUROC needs both classes present")
    v10, v01 = placements(pos, neg)
    return Auroc(float(v10.mean()), v10, v01)


def _hanley_mcneil_phi(a, m, n):
    """Hanley-McNeil variance of an AUROC divided by A(1-A), at A = a (away from 0 and 1)."""
    a = np.clip(a, 0.5 / (m * n), 1 - 0.5 / (m * n))
    return (1 + (m - 1) * (1 - a) / (2 - a) + (n - 1) * a / (1 + a)) / (m * n)


def variance_per_unit(a, s10, s01, m, n):
    """Variance of the AUROC per unit A(1-A): DeLong's (s10/m + s01/n) / A(1-A) shrunk
    towards the Hanley-McNeil value (weight SHRINK); the model value alone at A = 0 or 1.
    Bounded by the attainable range [1/(mn), 1/min(m, n)]. Arrays allowed."""
    a = np.asarray(a, dtype=np.float64)
    hm = _hanley_mcneil_phi(a, m, n)
    base = a * (1 - a)
    with np.errstate(invalid="ignore", divide="ignore"):
        delong = (np.asarray(s10) / m + np.asarray(s01) / n) / base
    phi = np.where(base > 0, (delong + SHRINK * hm) / (1 + SHRINK), hm)
    return np.clip(phi, 1.0 / (m * n), 1.0 / min(m, n))


def _placement_var(v):
    """Sample variance (ddof 1) along the last axis; 0 for fewer than 2 values."""
    v = np.asarray(v, dtype=np.float64)
    if v.shape[-1] < 2:
        return np.zeros(v.shape[:-1])
    return v.var(axis=-1, ddof=1)


def auroc_interval_from(a, s10, s01, m, n, level=LEVEL):
    """Score (Wilson-form) interval of AUROC values a with placement variances s10, s01."""
    a = np.asarray(a, dtype=np.float64)
    neff = 1.0 / variance_per_unit(a, s10, s01, m, n)
    z = critical_value(level, min(m, n) - 1)
    d = 1 + z * z / neff
    centre = (a + z * z / (2 * neff)) / d
    half = z * np.sqrt(a * (1 - a) / neff + z * z / (4 * neff * neff)) / d
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def auroc_interval(est, level=LEVEL):
    """[lo, hi] of an Auroc."""
    lo, hi = auroc_interval_from(est.value, _placement_var(est.v10), _placement_var(est.v01),
                                 est.m, est.n, level)
    return [float(lo), float(hi)]


def auroc_change(a, b, level=LEVEL, paired=True):
    """Change of AUROC from a to b (Auroc objects): {delta, ci, p_value}.

    paired: the same positives and negatives scored by two probes (steps, or a sweep and a
    control arm), correlation from DeLong's covariance of the placements; unpaired: independent
    sets (correlation 0)."""
    if paired and (a.m, a.n) != (b.m, b.n):
        raise ValueError("paired AUROCs need the same positives and negatives")
    delta, lo, hi, p = change_from_placements(a.v10, a.v01, b.v10, b.v01, level, paired)
    return {"delta": float(delta), "ci": [float(lo), float(hi)], "p_value": float(p)}


def _parts(v10, v01):
    """(AUROC, s10, s01, m, n) of placements (batched along leading axes)."""
    v10, v01 = np.asarray(v10, dtype=np.float64), np.asarray(v01, dtype=np.float64)
    return v10.mean(axis=-1), _placement_var(v10), _placement_var(v01), v10.shape[-1], \
        v01.shape[-1]


def _mover(terms, level):
    """MOVER interval of sum(c_i * theta_i) over independent AUROCs from (c_i, parts_i)
    terms: each term's arms come from its score interval at the same level."""
    est, low, high = 0.0, 0.0, 0.0
    for c, (a, s10, s01, m, n) in terms:
        lo, hi = auroc_interval_from(a, s10, s01, m, n, level)
        down, up = (a - lo, hi - a) if c > 0 else (hi - a, a - lo)     # arms of c * theta
        est, low, high = est + c * a, low + (c * down) ** 2, high + (c * up) ** 2
    return est, est - np.sqrt(low), est + np.sqrt(high)


@dataclass(frozen=True)
class ChangeModel:
    """The variance model of a change of AUROC b - a that the score interval inverts: each
    AUROC's variance is its shrunk variance per unit (phi) times theta(1 - theta) at a
    hypothesised value theta, paired AUROCs add DeLong's correlation rho (capped at MAX_RHO).
    Arrays allowed (batches)."""
    first: object                 # AUROC a as observed
    delta: object                 # b - a as observed
    df: int
    phi_a: object
    phi_b: object
    rho: object

    def sd_pair(self, ta, tb):
        """Standard deviation of the change if the two AUROCs were ta and tb."""
        va, vb = self.phi_a * ta * (1 - ta), self.phi_b * tb * (1 - tb)
        return np.sqrt(np.maximum(va + vb - 2 * self.rho * np.sqrt(va * vb), 1e-300))

    def sd_at(self, d0):
        """Standard deviation of the change with both observed AUROCs moved (by the same
        amount, kept inside [0, 1]) to differ by d0."""
        shift = (d0 - self.delta) / 2
        ta, tb = self.first - shift, self.first + self.delta + shift
        fix = np.maximum(0.0, -np.minimum(ta, tb)) - np.maximum(0.0, np.maximum(ta, tb) - 1)
        return self.sd_pair(np.clip(ta + fix, 0, 1), np.clip(tb + fix, 0, 1))


def change_model(a10, a01, b10, b01, paired=True):
    """ChangeModel of AUROC b minus AUROC a from their placements (power.py uses it for what
    a test could detect)."""
    a10, a01, b10, b01 = (np.asarray(v, dtype=np.float64) for v in (a10, a01, b10, b01))
    A, sa10, sa01, m, n = _parts(a10, a01)
    B, sb10, sb01, mb, nb = _parts(b10, b01)
    rho = 0.0
    if paired:
        rho = np.minimum(_delong_rho(a10, a01, b10, b01, sa10 / m + sa01 / n,
                                     sb10 / mb + sb01 / nb), MAX_RHO)
    return ChangeModel(A, B - A, min(m, n, mb, nb) - 1, variance_per_unit(A, sa10, sa01, m, n),
                       variance_per_unit(B, sb10, sb01, mb, nb), rho)


def change_from_placements(a10, a01, b10, b01, level=LEVEL, paired=True):
    """(delta, lo, hi, p) of AUROC b minus AUROC a from their placements; arrays of shape
    (..., m) and (..., n) give batches (the coverage simulations use that).

    A score-type interval, as Farrington-Manning for a difference of rates: a hypothesised
    change d0 is kept when |delta - d0| <= t * sd(d0), where sd(d0) is the standard deviation
    of the change with both AUROCs moved (by the same amount) to differ by d0. Each AUROC's
    variance is its shrunk variance per unit times theta(1 - theta) at the moved value; paired
    AUROCs add DeLong's correlation (capped at MAX_RHO). Near the ceiling this keeps the
    one-sided error near the nominal level, where a Wald interval does not."""
    model = change_model(a10, a01, b10, b01, paired)
    delta, df, sd_at = model.delta, model.df, model.sd_at
    t = critical_value(level, df)
    lo = _root(lambda d0: delta - d0 - t * sd_at(d0), delta, np.full(np.shape(delta), -1.0))
    hi = _root(lambda d0: d0 - delta - t * sd_at(d0), delta, np.ones(np.shape(delta)))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = 2 * special.stdtr(max(1, df), -np.abs(delta) / sd_at(np.zeros(np.shape(delta))))
    p = np.where(delta == 0, 1.0, p)
    return delta, lo, hi, p


def _root(g, inside, outside, steps=50):
    """Elementwise boundary of {g <= 0} between `inside` (g <= 0 there) and `outside` (the
    end of [-1, 1]; returned as is where g is still <= 0 there), by bisection."""
    inside, outside = np.array(inside, dtype=np.float64), np.array(outside, dtype=np.float64)
    reaches_end = g(outside) <= 0
    for _ in range(steps):
        mid = (inside + outside) / 2
        ok = g(mid) <= 0
        inside, outside = np.where(ok, mid, inside), np.where(ok, outside, mid)
    return np.where(reaches_end, outside, (inside + outside) / 2)


def _cov_last(x, y):
    """Sample covariance (ddof 1) of x and y along the last axis; 0 for fewer than 2."""
    k = x.shape[-1]
    if k < 2:
        return np.zeros(x.shape[:-1])
    return ((x - x.mean(axis=-1, keepdims=True)) * (y - y.mean(axis=-1, keepdims=True))
            ).sum(axis=-1) / (k - 1)


def _delong_rho(a10, a01, b10, b01, va, vb):
    """DeLong correlation of two AUROCs on the same rows, clipped to [-1, MAX_RHO]; 0 where
    either has no placement variance (e.g. an AUROC of exactly 0 or 1)."""
    m, n = a10.shape[-1], a01.shape[-1]
    c = _cov_last(a10, b10) / m + _cov_last(a01, b01) / n
    ok = (va > 0) & (vb > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(ok, c / np.sqrt(np.where(ok, va * vb, 1.0)), 0.0)
    return np.clip(rho, -1.0, MAX_RHO)


def auroc_difference(terms, level=LEVEL):
    """Interval of sum(coef * AUROC) over independent sets by MOVER: terms = [(coef, Auroc)].
    Returns {value, ci}."""
    value, lo, hi = _mover([(c, _parts(t.v10, t.v01)) for c, t in terms], level)
    return {"value": float(value), "ci": [float(lo), float(hi)]}


# --------------------------------------------------------------------------------------------
# Multiplicity
# --------------------------------------------------------------------------------------------
def holm(p_values):
    """Holm step-down adjusted p-values (same order as given; nan stays nan, not counted)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if not ok.size:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    k = len(order)
    adj = np.maximum.accumulate((k - np.arange(k)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


# --------------------------------------------------------------------------------------------
# One interface for every metric
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """A metric on one eval set: an AUROC (with placements) or a proportion (with the flag of
    every counted row), so that intervals and paired changes need nothing else."""
    kind: str                       # "auroc" or "proportion"
    value: float
    parts: object                   # Auroc, or a bool array of the counted rows

    @property
    def n(self):
        """Counted rows (positives + negatives for an AUROC)."""
        return self.parts.m + self.parts.n if self.kind == "auroc" else int(self.parts.size)


def auroc_estimate(pos, neg):
    """Estimate of the AUROC of positive vs negative scores (None when a side is empty)."""
    if not np.size(pos) or not np.size(neg):
        return None
    a = auroc(pos, neg)
    return Estimate("auroc", a.value, a)


def proportion_estimate(flags):
    """Estimate of the share of True flags (None when there is no row)."""
    flags = np.asarray(flags, dtype=bool).ravel()
    if not flags.size:
        return None
    return Estimate("proportion", float(flags.mean()), flags)


def interval(est, level=LEVEL):
    """[lo, hi] of an Estimate: score interval (AUROC) or Clopper-Pearson (proportion)."""
    if est.kind == "auroc":
        return auroc_interval(est.parts, level)
    lo, hi = proportion_interval(int(est.parts.sum()), est.parts.size, level)
    return [lo, hi]


def change(a, b, level=LEVEL, paired=True):
    """Change from Estimate a to Estimate b of the same kind: {delta, ci, p_value}; paired
    when both are measured on the same rows (same eval set, two probes)."""
    if a.kind != b.kind:
        raise ValueError(f"cannot compare a {a.kind} with a {b.kind}")
    if paired and a.n != b.n:
        paired = False
    if a.kind == "auroc":
        return auroc_change(a.parts, b.parts, level, paired and (a.parts.m, a.parts.n)
                            == (b.parts.m, b.parts.n))
    return proportion_change(a.parts, b.parts, level, paired)


def call(delta, p, alpha=ALPHA):
    """'improved' / 'degraded' when p < alpha (in the direction of delta), else no clear change."""
    if p is None or not np.isfinite(p) or p >= alpha or delta == 0:
        return "no clear change"
    return "improved" if delta > 0 else "degraded"
