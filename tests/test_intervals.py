"""intervals.py: values against scikit-learn, consistency of intervals and p-values, and
coverage measured by simulation where the truth is known (vectorized, no fitting)."""
import numpy as np
import pytest
from scipy.stats import binom, norm
from sklearn.metrics import roc_auc_score

from calibration import paired_change_bounds  # noqa: E402  (benchmarks/, see conftest)
from sweeplib import intervals

MIN_COVERAGE = 0.93


# ---- values ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_auroc_and_placements_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    pos, neg = rng.integers(0, 6, 13).astype(float), rng.integers(0, 6, 17).astype(float)
    a = intervals.auroc(pos, neg)
    want = roc_auc_score(np.r_[np.ones(13), np.zeros(17)], np.r_[pos, neg])
    assert a.value == pytest.approx(want, abs=1e-12)
    assert a.v01.mean() == pytest.approx(want, abs=1e-12)
    # placements by brute force: share of the other class below / above, ties one half
    v10 = [np.mean((p > neg) + 0.5 * (p == neg)) for p in pos]
    v01 = [np.mean((pos > q) + 0.5 * (pos == q)) for q in neg]
    np.testing.assert_allclose(a.v10, v10)
    np.testing.assert_allclose(a.v01, v01)


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError):
        intervals.auroc([1.0, 2.0], [])
    assert intervals.auroc_estimate([1.0], []) is None
    assert intervals.proportion_estimate([]) is None


def test_holm_matches_its_definition():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.2])
    adj = intervals.holm(p)
    np.testing.assert_allclose(adj[[0, 2, 1, 4]], [0.04, 0.09, 0.09, 0.2])
    assert np.isnan(adj[3])


# ---- no zero-width interval at a boundary ----------------------------------------------------
def test_boundaries_never_give_zero_width_intervals():
    lo, hi = intervals.interval(intervals.proportion_estimate(np.ones(6, bool)))
    assert hi == 1.0 and lo < 0.7                                    # 6/6 detected
    lo, hi = intervals.interval(intervals.proportion_estimate(np.zeros(6, bool)))
    assert lo == 0.0 and hi > 0.3
    perfect = intervals.auroc_estimate([3.0, 4.0, 5.0], [0.0, 1.0, 2.0])
    lo, hi = intervals.interval(perfect)
    assert perfect.value == 1.0 and hi == 1.0 and lo < 0.8          # AUROC 1.0 on 3 + 3
    d = intervals.change(perfect, perfect)
    assert d["ci"][0] < 0 < d["ci"][1] and d["p_value"] == 1.0       # two perfect probes
    big = intervals.auroc_estimate(np.arange(60.0) + 100, np.arange(60.0))
    d = intervals.change(big, big)
    assert 0 < d["ci"][1] < 0.1                                       # narrower with more rows


def test_intervals_and_p_values_agree():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n1, n0 = rng.integers(3, 40, 2)
        y = np.r_[np.ones(n1), np.zeros(n0)].astype(bool)
        sa = rng.normal(size=n1 + n0) + rng.uniform(0, 2) * y
        sb = sa * rng.uniform(0, 1) + rng.normal(size=n1 + n0) + rng.uniform(0, 2) * y
        for ea, eb in ((intervals.auroc_estimate(sa[y], sa[~y]),
                        intervals.auroc_estimate(sb[y], sb[~y])),
                       (intervals.proportion_estimate(sa > 0.5),
                        intervals.proportion_estimate(sb > 0.5))):
            d = intervals.change(ea, eb)
            lo, hi = d["ci"]
            assert lo <= hi and -1 <= lo and hi <= 1
            if not (lo in (-1.0,) or hi in (1.0,)):
                assert (lo > 0 or hi < 0) == (d["p_value"] < 0.05), d
            lo1, hi1 = intervals.interval(eb)
            assert lo1 <= eb.value <= hi1


# ---- coverage by simulation ------------------------------------------------------------------
def test_clopper_pearson_exact_coverage_at_small_n():
    """Exact (not simulated) coverage: sum of the binomial pmf over the k whose interval covers p."""
    worst = 1.0
    for n in list(range(1, 31)) + [50, 100]:
        k = np.arange(n + 1)
        lo, hi = intervals.proportion_interval(k, np.full(n + 1, n))
        assert np.all(hi - lo > 0)
        for p in (0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99, 0.999):
            cover = binom.pmf(k, n, p)[(lo <= p) & (p <= hi)].sum()
            worst = min(worst, cover)
    assert worst >= 0.95, worst


def _binormal(rng, reps, m, n, auc, sd_pos=1.0, sd_neg=1.0):
    """(pos, neg) score arrays of shape (reps, m), (reps, n) with the given true AUROC."""
    d = np.hypot(sd_pos, sd_neg) * norm.ppf(auc)
    return rng.normal(d, sd_pos, (reps, m)), rng.normal(0.0, sd_neg, (reps, n))


@pytest.mark.parametrize("m,n", [(10, 10), (5, 5), (20, 60)])
@pytest.mark.parametrize("sds", [(1.0, 1.0), (2.0, 1.0), (1.0, 2.0)])
def test_auroc_interval_coverage(m, n, sds):
    rng = np.random.default_rng(m * 100 + n)
    for auc in (0.5, 0.7, 0.85, 0.95):
        pos, neg = _binormal(rng, 2000, m, n, auc, *sds)
        v10, v01 = intervals.placements(pos, neg)
        lo, hi = intervals.auroc_interval_from(
            v10.mean(-1), intervals._placement_var(v10), intervals._placement_var(v01), m, n)
        assert np.all(hi > lo)
        cover = np.mean((lo <= auc) & (auc <= hi))
        assert cover >= MIN_COVERAGE, (m, n, sds, auc, cover)


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_paired_auroc_change_coverage_10_plus_10(rho):
    """Two probes scoring the same 10 + 10 rows, correlated through a shared per-row term."""
    rng = np.random.default_rng(int(rho * 10))
    for auc_a, auc_b in ((0.5, 0.5), (0.7, 0.8), (0.6, 0.9), (0.95, 0.95), (0.9, 0.95)):
        lo, hi = paired_change_bounds(rng, 10, 10, rho, auc_a, auc_b, 2000, intervals.LEVEL)
        truth = auc_b - auc_a
        assert np.all(hi > lo)
        cover = np.mean((lo <= truth) & (truth <= hi))
        assert cover >= MIN_COVERAGE, (rho, auc_a, auc_b, cover)


@pytest.mark.parametrize("rho", [pytest.param(0.5, marks=pytest.mark.slow),
                                 pytest.param(0.8, marks=pytest.mark.slow), 0.95])
def test_one_sided_error_of_the_change_near_the_ceiling(rho):
    """The non-inferiority check uses the lower bound of the 90 % interval: when the true drop
    is exactly 0.02 near AUROC 1 (gold_106's size, 51 + 55), that bound may lie above the truth
    in about 5 % of samples (a Wald interval on the difference reached 9-12 %)."""
    rng = np.random.default_rng(int(rho * 100))
    for auc_a, auc_b in ((0.99, 0.97), (0.97, 0.95), (0.95, 0.93)):
        lo, hi = paired_change_bounds(rng, 51, 55, rho, auc_a, auc_b, 4000, 0.90)
        truth = auc_b - auc_a
        assert np.mean(lo > truth) <= 0.07, (rho, auc_a, auc_b, np.mean(lo > truth))
        assert np.mean(hi < truth) <= 0.07, (rho, auc_a, auc_b, np.mean(hi < truth))


@pytest.mark.parametrize("n", [10, 30, 100])
def test_paired_proportion_change_coverage(n):
    """Agresti-Min on paired flags (the same rows at two steps), correlated through a latent."""
    rng = np.random.default_rng(n)
    for pa, pb, rho in ((0.5, 0.5, 0.0), (0.5, 0.7, 0.5), (0.9, 0.95, 0.8), (0.97, 0.97, 0.5)):
        u = rng.normal(size=(1500, n))
        za = np.sqrt(rho) * u + np.sqrt(1 - rho) * rng.normal(size=u.shape)
        zb = np.sqrt(rho) * u + np.sqrt(1 - rho) * rng.normal(size=u.shape)
        fa, fb = za < norm.ppf(pa), zb < norm.ppf(pb)
        cover = np.mean([_covers(intervals.proportion_change(a, b)["ci"], pb - pa)
                         for a, b in zip(fa, fb)])
        assert cover >= MIN_COVERAGE, (n, pa, pb, rho, cover)


def _covers(ci, truth):
    """True when the interval holds the truth."""
    return ci[0] <= truth <= ci[1]


def test_holm_keeps_the_family_wise_error_under_the_null():
    """Five true nulls with correlated p-values: Holm rejects any in at most ~5 % of families."""
    rng = np.random.default_rng(7)
    z = rng.normal(size=(20000, 1)) * 0.5 + rng.normal(size=(20000, 5))
    p = 2 * norm.sf(np.abs(z / np.sqrt(1.25)))
    any_raw = np.mean((p < 0.05).any(axis=1))
    any_holm = np.mean([(intervals.holm(row) < 0.05).any() for row in p[:4000]])
    assert any_raw > 0.12 and any_holm <= 0.055, (any_raw, any_holm)
