"""Scaler statistics of many row subsets at once, bit-identical to fitting each subset alone.

For every fit, the probe needs what `StandardScaler(with_mean=False).fit(X_fit)` stores
(`mean_`, `var_`, `scale_`, `n_samples_seen_`) and the float32 column means `X_fit.mean(axis=0)`
that centre the problem (probe.fit). Computed fit by fit, that is one copy of the fit's rows and
two passes over them per fit. Here every fit's row mask is a column of one matrix and the sums
are batched sparse products over the universe (lockstep.Universe), in the same order as the
one-fit computations, so they are the same numbers:

- float32 means: scipy scales every value by float32(1/n), then sums column-wise in float32
  over rows in order; a product with a mask holding float32(1/n) does exactly that.
- scikit-learn's mean: a float64 sum over rows in order (a product with a 0/1 mask).
- scikit-learn's variance (float64, two passes, cast to float32): the second pass has no
  product form, so it is computed from the sums of squares and checked: when the result lies
  farther from a float32 rounding boundary than a bound on both computations' rounding errors,
  both round to the same float32; the few others are recomputed exactly, value by value, in
  scikit-learn's order.
"""
from __future__ import annotations

import numpy as np

U = np.finfo(np.float64).eps / 2          # unit roundoff of float64
SAFETY = 8.0                               # margin on the rounding-error bound


def batch(universe, rows_list):
    """Per fit (rows = ascending universe positions): {"mean": float64 of scipy's float32
    column mean, "mean_", "var_", "scale_", "n_samples_seen_": as StandardScaler stores them,
    "exact_recomputed": values recomputed one by one}."""
    k = len(rows_list)
    cover = np.array([int(r[-1]) + 1 for r in rows_list])
    order = np.argsort(-cover, kind="stable")
    cover = cover[order]
    mask = np.zeros((universe.n, k), dtype=np.float64)
    scaled = np.zeros((universe.n, k), dtype=np.float32)
    for col, i in enumerate(order):
        rows = rows_list[i]
        mask[rows, col] = 1.0
        scaled[rows, col] = np.float32(1.0 / len(rows))
    to64 = lambda v: v.astype(np.float64)              # noqa: E731
    square = lambda v: np.square(v.astype(np.float64))  # noqa: E731
    ones = lambda v: np.ones(len(v))                   # noqa: E731
    mean32 = universe.xtr(scaled, cover)                            # scipy's float32 mean
    s1 = universe.xtr(mask, cover, data=to64, dtype=np.float64)     # scikit-learn's sum
    s2 = universe.xtr(mask, cover, data=square, dtype=np.float64)   # sum of squares
    nnz = universe.xtr(mask, cover, data=ones, dtype=np.float64)    # non-zeros per column
    out = [None] * k
    for col, i in enumerate(order):
        n = float(len(rows_list[i]))
        mean64 = s1[:, col] / n
        var = _variance(universe, rows_list[i], n, mean64, s1[:, col], s2[:, col], nnz[:, col])
        out[i] = _scaler_attributes(mean32[:, col], mean64, var, n)
    return out


def _variance(universe, rows, n, mean, s1, s2, c):
    """float32 variance per column, equal to scikit-learn's two-pass result (see module doc);
    returns (variances, number of columns recomputed exactly)."""
    approx_nz = np.maximum(s2 - 2.0 * mean * s1 + c * mean * mean, 0.0)
    approx = (approx_nz + (n - c) * mean * mean) / n
    # rounding errors of both computations: (c + 7) u per term of magnitude, plus the
    # (second-order) correction term scikit-learn subtracts
    abs_sum = np.sqrt(c * s2)                       # >= sum |x| (Cauchy-Schwarz)
    magnitude = s2 + 2.0 * np.abs(mean) * abs_sum + n * mean * mean
    corr = (c + 3.0) * U * (2.0 * abs_sum + n * np.abs(mean))
    bound = SAFETY * (2.0 * (c + 7.0) * U * magnitude + 2.0 * corr * corr / n) / n
    v32 = approx.astype(np.float32)
    lo = np.nextafter(v32, np.float32(-np.inf)).astype(np.float64)
    hi = np.nextafter(v32, np.float32(np.inf)).astype(np.float64)
    mid_lo = (lo + v32) / 2.0
    mid_hi = (v32 + hi) / 2.0
    unsure = np.flatnonzero((approx - mid_lo <= bound) | (mid_hi - approx <= bound))
    if len(unsure):
        member = np.zeros(universe.n, dtype=bool)
        member[rows] = True
        for j in unsure:
            v32[j] = np.float32(_exact_variance(universe, j, member, n, mean[j], c[j]))
    return v32, len(unsure)


def _exact_variance(universe, j, member, n, mean, c):
    """scikit-learn's float64 two-pass variance of column j over the member rows, step by
    step in its order (sequential sums; numpy's cumsum is sequential)."""
    rows, vals = universe.column(j)
    x = vals[member[rows]].astype(np.float64)
    d = x - mean
    corr = float(np.cumsum(d)[-1]) if len(d) else 0.0
    var = float(np.cumsum(d * d)[-1]) if len(d) else 0.0
    if n != c:
        corr -= (n - c) * mean
    corr = corr ** 2 / n
    if n != c:
        var += (n - c) * mean ** 2
    return (var - corr) / n


def _constant_features(var, mean, n_seen):
    """Columns whose variance is indistinguishable from zero: at most the rounding-error bound
    of a two-pass float64 variance (Chan, Golub and LeVeque), the rule StandardScaler applies
    (var <= n eps var + (n eps mean)^2, eps of float64)."""
    eps = np.finfo(np.float64).eps
    return var <= n_seen * eps * var + (n_seen * mean * eps) ** 2


def _scaler_attributes(mean32, mean64, var, n):
    """What StandardScaler(with_mean=False).fit stores, from the float64 mean and the float32
    variance (scikit-learn casts both through float32; a constant column gets scale 1)."""
    v32, recomputed = var
    mean_ = mean64.astype(np.float32).astype(np.float64)
    var_ = v32.astype(np.float64)
    n_seen = np.float32(n)
    scale_ = np.sqrt(var_)
    scale_[_constant_features(var_, mean_, n_seen)] = 1.0
    return {"mean": np.asarray(mean32, dtype=np.float64), "mean_": mean_, "var_": var_,
            "scale_": scale_, "n_samples_seen_": n_seen, "exact_recomputed": recomputed}
