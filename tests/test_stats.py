"""Tests for duplicates.py (duplicate detection, leakage audit) and the grouped split (splits.py)."""

import os
import sys

import numpy as np
import pytest
import scipy.sparse as sp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sweeplib import duplicates  # noqa: E402
from sweeplib import splits  # noqa: E402


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
    h = duplicates.row_hashes(X)
    assert h.dtype == np.dtype("S16") and np.unique(h).size == 30
    # Same rows from a dense float64 copy and from a non-canonical CSR hash the same.
    np.testing.assert_array_equal(duplicates.row_hashes(X.toarray().astype(np.float64)), h)
    coo = X.tocoo()
    noncanon = sp.csr_matrix((np.r_[coo.data, 0.0 * coo.data[:5]], (np.r_[coo.row, coo.row[:5]], np.r_[coo.col, coo.col[:5]])), shape=X.shape)
    np.testing.assert_array_equal(duplicates.row_hashes(noncanon), h)


def test_duplicate_counts_planted_cross_set():
    A = _random_csr(300, seed=2)
    clean = _random_csr(40, seed=3)
    exact = A[[5, 17, 17, 250]]
    near = _noisy_copy(A, [1, 2, 3], seed=4)
    B = sp.vstack([clean, exact, near], format="csr")
    for method in ("dense", "sparse"):
        r = duplicates.duplicate_counts(A, B, threshold=0.99, method=method, chunk=64)
        assert r["exact"] == 4 and r["near"] == 7
        assert r["max_cosine"] == pytest.approx(1.0)
        np.testing.assert_array_equal(r["near_rows"], np.arange(40, 47))
    # Random data alone: no false positives.
    r0 = duplicates.duplicate_counts(A, clean)
    assert r0["exact"] == 0 and r0["near"] == 0 and r0["max_cosine"] < 0.5


def test_duplicate_counts_within_set_ignores_self_pairs():
    X = _random_csr(100, seed=5)
    r0 = duplicates.duplicate_counts(None, X, same=True)
    assert r0["exact"] == 0 and r0["near"] == 0 and r0["near_pairs"] == 0 and r0["max_cosine"] < 0.5
    Y = sp.vstack([X, X[[0, 0]], _noisy_copy(X, [9], seed=6)], format="csr")  # rows 0,100,101 identical; 9~103
    for method in ("dense", "sparse"):
        r = duplicates.duplicate_counts(None, Y, same=True, method=method, chunk=32)
        assert r["exact"] == 3 and r["exact_pairs"] == 3
        assert r["near"] == 5 and r["near_pairs"] == 4


def test_duplicate_groups_exact_and_near():
    X = _random_csr(50, seed=7)
    Y = sp.vstack([X, X[[3]], _noisy_copy(X, [8], seed=8)], format="csr")
    g = duplicates.duplicate_groups(Y)
    assert g[50] == g[3] and g[51] != g[8] and np.unique(g).size == 51
    gn = duplicates.duplicate_groups(Y, threshold=0.99)
    assert gn[51] == gn[8] and gn[50] == gn[3] and np.unique(gn).size == 50


def test_exact_groups_survive_hash_collisions():
    X = _random_csr(20, seed=9)
    Y = sp.vstack([X, X[[2, 2, 7]]], format="csr")
    forced = np.full(Y.shape[0], b"same-hash-forall", dtype="S16")  # every row collides
    g = duplicates._exact_group_ids([Y], hashes=forced)
    np.testing.assert_array_equal(g, duplicates.duplicate_groups(Y))
    assert np.unique(g).size == 20 and g[20] == g[21] == g[2] and g[22] == g[7]


# ---------------------------------------------------------------- grouped split


def test_grouped_stratified_split():
    rng = np.random.default_rng(11)
    base = _random_csr(400, seed=12)
    dup_rows = rng.choice(400, 60)
    X = sp.vstack([base, base[dup_rows]], format="csr")  # planted exact duplicates
    strata = np.r_[rng.integers(0, 3, 400), np.zeros(60, int)]
    strata[400:] = strata[dup_rows]
    groups = duplicates.duplicate_groups(X)
    tr, ev = splits.grouped_stratified_split(strata, groups, eval_fraction=0.2, seed=1)
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(ev) > 0)
    assert np.intersect1d(tr, ev).size == 0 and tr.size + ev.size == 460
    assert np.intersect1d(groups[tr], groups[ev]).size == 0
    for r, orig in zip(range(400, 460), dup_rows):  # duplicates never cross the split
        assert (r in set(ev)) == (orig in set(ev))
    for s in range(3):
        frac = np.isin(np.flatnonzero(strata == s), ev).mean()
        assert abs(frac - 0.2) < 0.03
    tr2, ev2 = splits.grouped_stratified_split(strata, groups, 0.2, seed=1)
    np.testing.assert_array_equal(ev, ev2)
    _, ev3 = splits.grouped_stratified_split(strata, groups, 0.2, seed=2)
    assert not np.array_equal(ev, ev3)


def test_grouped_split_small_strata_get_both_sides():
    strata = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2])
    groups = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    tr, ev = splits.grouped_stratified_split(strata, groups, eval_fraction=0.1, seed=0)
    for s in (0, 1):
        assert np.isin(np.flatnonzero(strata == s), ev).any()
        assert np.isin(np.flatnonzero(strata == s), tr).any()
    # A stratum with a single group stays whole on one side.
    assert np.isin(12, tr) != np.isin(12, ev)


def test_grouped_split_sends_duplicated_rows_to_eval_at_the_data_rate():
    """Duplicate groups go to either side at random: over many seeds the held-out share of
    duplicated rows matches the eval fraction (placing large groups first sent ~99 % of them
    to eval)."""
    n, n_pairs, frac = 582, 40, 0.2
    shares = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        strata = rng.integers(0, 5, n)
        groups = np.arange(n)
        groups[1:2 * n_pairs:2] = groups[0:2 * n_pairs:2]          # rows 2i and 2i+1 are copies
        strata[1:2 * n_pairs:2] = strata[0:2 * n_pairs:2]
        _, ev = splits.grouped_stratified_split(strata, groups, frac, seed=seed)
        shares.append(np.isin(np.arange(2 * n_pairs), ev).mean())
        assert abs(len(ev) - frac * n) <= 3
    assert abs(np.mean(shares) - frac) < 0.03, np.mean(shares)
