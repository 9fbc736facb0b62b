"""Tests for stats.py: bootstrap CIs, paired deltas, leakage audit and grouped splits."""

import os
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import stats  # noqa: E402


# ---------------------------------------------------------------- AUROC


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(y * 0.7, 1.0), 1)  # rounding creates many ties
    assert stats.auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auroc_missing_class_raises():
    with pytest.raises(ValueError):
        stats.auroc([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(ValueError):
        stats.auroc([0.1, 0.2, 0.3], [0, 0, 0])


@pytest.mark.parametrize("integer_scores", [False, True])
def test_auroc_batch_matches_sklearn(integer_scores):
    rng = np.random.default_rng(5)
    B, n = 30, 80
    y = rng.integers(0, 2, (B, n))
    if integer_scores:  # exercises the counting path
        s = rng.integers(0, 12, (B, n)) + 3 * y
    else:
        s = np.round(rng.normal(y * 0.5, 1.0), 1)
    y[0] = 1  # a row with a missing class
    got = stats.auroc_batch(s, y)
    assert np.isnan(got[0])
    want = np.array([roc_auc_score(y[b], s[b]) for b in range(1, B)])
    np.testing.assert_allclose(got[1:], want, atol=1e-12)


def test_auroc_batch_broadcast_labels_and_rate_batch():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 50)
    s = rng.normal(size=(4, 50))
    np.testing.assert_allclose(stats.auroc_batch(s, y), [roc_auc_score(y, r) for r in s], atol=1e-12)
    flags = np.array([[True, False, True, True], [False, False, False, False]])
    np.testing.assert_allclose(stats.rate_batch(flags), [0.75, 0.0])


def test_percentile_ci_ignores_nan():
    x = np.concatenate([np.arange(101, dtype=float), [np.nan] * 20])
    lo, hi = stats.percentile_ci(x, 0.9)
    assert (lo, hi) == pytest.approx((5.0, 95.0))
    assert all(np.isnan(stats.percentile_ci([np.nan, np.nan])))


# ---------------------------------------------------------------- bootstrap indices


def test_stratified_indices_keep_strata():
    rng = np.random.default_rng(0)
    strata = rng.integers(0, 3, 97)
    idx = stats.stratified_bootstrap_indices(strata, n_boot=200, seed=3)
    assert idx.shape == (200, 97)
    # Every column draws only from its own stratum, so per-row stratum counts are fixed.
    np.testing.assert_array_equal(strata[idx], np.broadcast_to(strata, idx.shape))
    for s in range(3):
        assert np.all((strata[idx] == s).sum(axis=1) == (strata == s).sum())
    # Resampling actually happens (with replacement: some rows repeat indices).
    assert any(np.unique(r).size < 97 for r in idx)
    np.testing.assert_array_equal(idx, stats.stratified_bootstrap_indices(strata, 200, seed=3))
    assert not np.array_equal(idx, stats.stratified_bootstrap_indices(strata, 200, seed=4))


def test_bootstrap_metrics_keys_points_and_paired_indices():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 120)
    s = rng.normal(y * 1.2 - 0.3, 1.0)
    ref = rng.normal(-1.0, 1.0, 70)
    th = {"1": 2.0, "5": 1.0}
    idx = stats.stratified_bootstrap_indices(y, 300, seed=0)
    boot = stats.bootstrap_metrics(s, y, thresholds=th, idx=idx, reference_neg_scores=ref)
    keys = {"auroc", "accuracy", "detection_rate", "recall_at_fpr_1", "eval_fpr_1",
            "recall_at_fpr_5", "eval_fpr_5", "auroc_vs_reference_negatives"}
    assert set(boot) == keys and all(v.shape == (300,) for v in boot.values())
    # Row b of the bootstrap equals the metric computed directly on resample b.
    b = 7
    sb, yb = s[idx[b]], y[idx[b]]
    assert boot["auroc"][b] == pytest.approx(roc_auc_score(yb, sb))
    assert boot["accuracy"][b] == pytest.approx(np.mean((sb >= 0) == (yb == 1)))
    assert boot["recall_at_fpr_5"][b] == pytest.approx(np.mean(sb[yb == 1] >= 1.0))
    assert boot["eval_fpr_1"][b] == pytest.approx(np.mean(sb[yb == 0] >= 2.0))
    pt = stats.point_metrics(s, y, thresholds=th, reference_neg_scores=ref)
    assert pt["auroc"] == pytest.approx(roc_auc_score(y, s))
    lab = np.r_[np.ones((y == 1).sum()), np.zeros(ref.size)]
    assert pt["auroc_vs_reference_negatives"] == pytest.approx(roc_auc_score(lab, np.r_[s[y == 1], ref]))
    assert pt["detection_rate"] == pytest.approx(np.mean(s[y == 1] >= 0))
    ci = stats.summarize(boot)
    assert set(ci) == keys and all(lo <= pt[k] <= hi for k, (lo, hi) in ci.items() if k != "auroc_vs_reference_negatives")
    # Only one class present: AUROC and the missing-class rates are omitted.
    only_neg = stats.bootstrap_metrics(s[y == 0], np.zeros((y == 0).sum()), thresholds=th, n_boot=50)
    assert set(only_neg) == {"accuracy", "eval_fpr_1", "eval_fpr_5"}
    # Indices that move samples across labels are rejected.
    with pytest.raises(ValueError):
        stats.bootstrap_metrics(s, y, idx=np.random.default_rng(0).integers(0, 120, (10, 120)))


def test_bootstrap_ci_coverage_simulation():
    d = 1.0
    true_auc = norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(2024)
    hits = 0
    draws = 200
    for i in range(draws):  # loop over simulated studies, not resamples
        y = np.r_[np.ones(50, int), np.zeros(50, int)]
        s = np.r_[rng.normal(d, 1, 50), rng.normal(0, 1, 50)]
        boot = stats.bootstrap_metrics(s, y, n_boot=500, seed=i)
        lo, hi = stats.percentile_ci(boot["auroc"])
        hits += lo <= true_auc <= hi
    assert 0.90 <= hits / draws <= 0.98


# ---------------------------------------------------------------- paired deltas


def _paired_boot(shift, seed):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(80, int), np.zeros(80, int)]
    latent = rng.normal(0, 1, 160)
    a = latent + y * 0.8 + rng.normal(0, 0.5, 160)
    b = latent + y * (0.8 + shift) + rng.normal(0, 0.5, 160)
    idx = stats.stratified_bootstrap_indices(y, 1000, seed=seed)
    ba, bb = stats.bootstrap_metrics(a, y, idx=idx), stats.bootstrap_metrics(b, y, idx=idx)
    return ba["auroc"], bb["auroc"], stats.auroc(a, y), stats.auroc(b, y)


def test_paired_delta_flags_planted_improvement():
    r = stats.paired_delta(*_paired_boot(shift=0.8, seed=1))
    assert r["delta"] > 0 and r["verdict"] == "improved"
    assert r["p_value"] < 0.05 and r["ci"][0] > 0
    worse = stats.paired_delta(*_paired_boot(shift=-0.6, seed=2))
    assert worse["verdict"] == "degraded" and worse["ci"][1] < 0
    flipped = stats.paired_delta(*_paired_boot(shift=0.8, seed=1), higher_is_better=False)
    assert flipped["verdict"] == "degraded"


def test_paired_delta_null_change_not_flagged():
    r = stats.paired_delta(*_paired_boot(shift=0.0, seed=3))
    assert r["verdict"] == "no clear change" and r["ci"][0] <= 0 <= r["ci"][1] and r["p_value"] > 0.05
    # Across many seeded null replicates the false-flag rate stays near the nominal 5%.
    flagged = [stats.paired_delta(*_paired_boot(0.0, seed))["verdict"] != "no clear change" for seed in range(60)]
    assert np.mean(flagged) <= 0.12
    same = stats.paired_delta(np.ones(10), np.ones(10), 0.5, 0.5)
    assert same["p_value"] == 1.0 and same["verdict"] == "no clear change"


def test_inflection_step():
    imp = lambda d: {"delta": d, "ci": [0.01, 0.2], "p_value": 0.01, "verdict": "improved"}
    none = {"delta": 0.3, "ci": [-0.1, 0.5], "p_value": 0.2, "verdict": "no clear change"}
    steps = [0, 1, 2, 3]
    assert stats.inflection_step([imp(0.02), imp(0.10), imp(0.05)], steps) == 2
    assert stats.inflection_step([none, None, imp(0.04)], steps) == 3
    assert stats.inflection_step([none, None, none], steps) is None
    with pytest.raises(ValueError):
        stats.inflection_step([none], steps)


def test_gap_ci():
    rng = np.random.default_rng(0)
    r = stats.gap_ci(rng.normal(0.9, 0.02, 1000), rng.normal(0.7, 0.03, 1000), 0.9, 0.7)
    assert r["gap"] == pytest.approx(0.2) and r["excludes_zero"] and r["ci"][0] > 0.1
    r0 = stats.gap_ci(rng.normal(0.8, 0.05, 1000), rng.normal(0.8, 0.05, 1000), 0.8, 0.8)
    assert not r0["excludes_zero"]


# ---------------------------------------------------------------- leakage audit


def _random_csr(n, f=2048, nnz=120, seed=0, scale=300.0):
    rng = np.random.default_rng(seed)
    cols = np.argsort(rng.random((n, f)), axis=1)[:, :nnz]
    rows = np.repeat(np.arange(n), nnz)
    vals = (rng.lognormal(0, 0.7, n * nnz) * scale).astype(np.float32)
    return sp.csr_matrix((vals, (rows, cols.ravel())), shape=(n, f))


def _noisy_copy(X, rows, seed, rel=0.01):
    """Copies of rows with small multiplicative noise on the values (cosine ~ 0.9999)."""
    rng = np.random.default_rng(seed)
    Y = X[rows].copy()
    Y.data = Y.data * (1 + rel * rng.normal(size=Y.data.size)).astype(np.float32)
    return Y


def test_row_hashes_equal_rows_equal_hashes():
    X = _random_csr(30, seed=1)
    h = stats.row_hashes(X)
    assert h.dtype == np.dtype("S16") and np.unique(h).size == 30
    # Same rows from a dense float64 copy and from a non-canonical CSR hash the same.
    np.testing.assert_array_equal(stats.row_hashes(X.toarray().astype(np.float64)), h)
    coo = X.tocoo()
    noncanon = sp.csr_matrix((np.r_[coo.data, 0.0 * coo.data[:5]], (np.r_[coo.row, coo.row[:5]], np.r_[coo.col, coo.col[:5]])), shape=X.shape)
    np.testing.assert_array_equal(stats.row_hashes(noncanon), h)


def test_duplicate_counts_planted_cross_set():
    A = _random_csr(300, seed=2)
    clean = _random_csr(40, seed=3)
    exact = A[[5, 17, 17, 250]]
    near = _noisy_copy(A, [1, 2, 3], seed=4)
    B = sp.vstack([clean, exact, near], format="csr")
    for method in ("dense", "sparse"):
        r = stats.duplicate_counts(A, B, threshold=0.99, method=method, chunk=64)
        assert r["exact"] == 4 and r["near"] == 7
        assert r["max_cosine"] == pytest.approx(1.0)
    # Random data alone: no false positives.
    r0 = stats.duplicate_counts(A, clean)
    assert r0["exact"] == 0 and r0["near"] == 0 and r0["max_cosine"] < 0.5


def test_duplicate_counts_within_set_ignores_self_pairs():
    X = _random_csr(100, seed=5)
    r0 = stats.duplicate_counts(None, X, same=True)
    assert r0["exact"] == 0 and r0["near"] == 0 and r0["near_pairs"] == 0 and r0["max_cosine"] < 0.5
    Y = sp.vstack([X, X[[0, 0]], _noisy_copy(X, [9], seed=6)], format="csr")  # rows 0,100,101 identical; 9~103
    for method in ("dense", "sparse"):
        r = stats.duplicate_counts(None, Y, same=True, method=method, chunk=32)
        assert r["exact"] == 3 and r["exact_pairs"] == 3
        assert r["near"] == 5 and r["near_pairs"] == 4


def test_duplicate_groups_exact_and_near():
    X = _random_csr(50, seed=7)
    Y = sp.vstack([X, X[[3]], _noisy_copy(X, [8], seed=8)], format="csr")
    g = stats.duplicate_groups(Y)
    assert g[50] == g[3] and g[51] != g[8] and np.unique(g).size == 51
    gn = stats.duplicate_groups(Y, threshold=0.99)
    assert gn[51] == gn[8] and gn[50] == gn[3] and np.unique(gn).size == 50


def test_exact_groups_survive_hash_collisions():
    X = _random_csr(20, seed=9)
    Y = sp.vstack([X, X[[2, 2, 7]]], format="csr")
    forced = np.full(Y.shape[0], b"same-hash-forall", dtype="S16")  # every row collides
    g = stats._exact_group_ids([Y], hashes=forced)
    np.testing.assert_array_equal(g, stats.duplicate_groups(Y))
    assert np.unique(g).size == 20 and g[20] == g[21] == g[2] and g[22] == g[7]


# ---------------------------------------------------------------- grouped split


def test_grouped_stratified_split():
    rng = np.random.default_rng(11)
    base = _random_csr(400, seed=12)
    dup_rows = rng.choice(400, 60)
    X = sp.vstack([base, base[dup_rows]], format="csr")  # planted exact duplicates
    strata = np.r_[rng.integers(0, 3, 400), np.zeros(60, int)]
    strata[400:] = strata[dup_rows]
    groups = stats.duplicate_groups(X)
    tr, ev = stats.grouped_stratified_split(strata, groups, eval_fraction=0.2, seed=1)
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(ev) > 0)
    assert np.intersect1d(tr, ev).size == 0 and tr.size + ev.size == 460
    assert np.intersect1d(groups[tr], groups[ev]).size == 0
    for r, orig in zip(range(400, 460), dup_rows):  # duplicates never cross the split
        assert (r in set(ev)) == (orig in set(ev))
    for s in range(3):
        frac = np.isin(np.flatnonzero(strata == s), ev).mean()
        assert abs(frac - 0.2) < 0.03
    tr2, ev2 = stats.grouped_stratified_split(strata, groups, 0.2, seed=1)
    np.testing.assert_array_equal(ev, ev2)
    _, ev3 = stats.grouped_stratified_split(strata, groups, 0.2, seed=2)
    assert not np.array_equal(ev, ev3)


def test_grouped_split_small_strata_get_both_sides():
    strata = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2])
    groups = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    tr, ev = stats.grouped_stratified_split(strata, groups, eval_fraction=0.1, seed=0)
    for s in (0, 1):
        assert np.isin(np.flatnonzero(strata == s), ev).any()
        assert np.isin(np.flatnonzero(strata == s), tr).any()
    # A stratum with a single group stays whole on one side.
    assert np.isin(12, tr) != np.isin(12, ev)
