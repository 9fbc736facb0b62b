"""power.py: the combined in-distribution test's error rates and power by simulation (true
change known), and the minimum detectable effect against a simulated power curve."""
import numpy as np
import pytest
from scipy.stats import norm

from sweeplib import intervals, power

ALPHA = 0.05
TOL = 0.02
GOLD = (51, 55)           # gold_106's classes
OOF = (420, 650)          # a quarter of train's rows (the calibration's size)


def _paired_scores(rng, reps, n, rho, auc_a, auc_b):
    """(scores a, scores b, labels) of reps pairs of probes scoring the same n = (pos, neg)
    rows, binormal, correlated rho through a per-row term."""
    m, k = n
    y = np.r_[np.ones(m), np.zeros(k)].astype(bool)
    u = rng.normal(size=(reps, m + k))

    def probe(auc):
        """Scores of one probe with the given AUROC."""
        return (np.sqrt(2) * norm.ppf(auc) * y + np.sqrt(rho) * u
                + np.sqrt(1 - rho) * rng.normal(size=u.shape))
    return probe(auc_a), probe(auc_b), y


def _paired_parts(rng, reps, n, rho, auc_a, auc_b):
    """Placements (a10, a01, b10, b01) of reps simulated pairs of probes."""
    sa, sb, y = _paired_scores(rng, reps, n, rho, auc_a, auc_b)
    return intervals.placements(sa[:, y], sa[:, ~y]) + intervals.placements(sb[:, y], sb[:, ~y])


def _changes(rng, reps, n, rho, auc_a, auc_b, name, alpha=ALPHA):
    """[power.Change] of reps simulated paired changes (batched intervals, then one Change
    each, built as power.change_of builds them)."""
    a10, a01, b10, b01 = _paired_parts(rng, reps, n, rho, auc_a, auc_b)
    d, lo, hi, _ = intervals.change_from_placements(a10, a01, b10, b01, level=1 - 2 * alpha)
    df = min(n) - 1
    crit = intervals.critical_value(1 - 2 * alpha, df)
    return [power.Change(name, float(x), float(x - lo_), float(hi_ - x),
                         float((hi_ - lo_) / (2 * crit)), sum(n), df)
            for x, lo_, hi_ in zip(d, lo, hi)]


def _calls(gold, oof, tol=TOL):
    """(holds, drops) arrays of the combined test over paired simulated changes."""
    holds, drops = [], []
    for g, o in zip(gold, oof):
        c = power.combine([g, o])
        holds.append(c.delta - c.lower_arm > -tol)
        drops.append(c.delta + c.upper_arm < -tol)
    return np.array(holds), np.array(drops)


def test_combine_weights_by_inverse_variance_and_shrinks_the_interval():
    g = power.Change("gold_106", -0.01, 0.06, 0.05, 0.03, 106, 50)
    o = power.Change("train_oof", -0.004, 0.006, 0.006, 0.0036, 1000, 400)
    c = power.combine([g, o])
    w = np.array([1 / 0.03 ** 2, 1 / 0.0036 ** 2])
    w /= w.sum()
    assert c.weights["gold_106"] == pytest.approx(w[0]) and sum(c.weights.values()) == 1
    assert c.delta == pytest.approx(w @ [-0.01, -0.004])
    assert c.lower_arm == pytest.approx(np.hypot(w[0] * 0.06, w[1] * 0.006))
    assert c.lower_arm < o.lower_arm and c.heterogeneity_p > 0.5
    far = power.combine([power.Change("gold_106", 0.2, 0.03, 0.03, 0.015, 106, 50), o])
    assert far.heterogeneity_p < 1e-6


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_combined_test_at_the_tolerance_says_holds_at_most_alpha(rho):
    """True change exactly -tolerance in both sets: 'holds' (and 'drops') in <= 5 %."""
    rng = np.random.default_rng(int(rho * 10))
    reps = 800
    gold = _changes(rng, reps, GOLD, rho, 0.96, 0.94, "gold_106")
    oof = _changes(rng, reps, OOF, rho, 0.96, 0.94, "train_oof")
    holds, drops = _calls(gold, oof)
    # 5 % plus Monte-Carlo slack (3 standard errors of a rate at 800 samples)
    assert holds.mean() <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / reps), holds.mean()
    assert drops.mean() <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / reps), drops.mean()


def test_combined_test_has_power_where_gold_alone_has_none():
    """No true change: gold_106 alone often fails to show 'holds'; the combined test mostly
    shows it (the power is printed)."""
    rng = np.random.default_rng(7)
    reps = 400
    gold = _changes(rng, reps, GOLD, 0.8, 0.96, 0.96, "gold_106")
    oof = _changes(rng, reps, OOF, 0.8, 0.96, 0.96, "train_oof")
    holds, _ = _calls(gold, oof)
    alone = np.mean([g.delta - g.lower_arm > -TOL for g in gold])
    print(f"P(holds | no change): combined {holds.mean():.3f}, gold_106 alone {alone:.3f}")
    assert holds.mean() > 0.8 and holds.mean() > alone + 0.3


def _pilot_changes(rng, reps, n, rho, auc_a, auc_b):
    """[power.Change] of single simulated samples, built by power.change_of (with sd_at)."""
    sa, sb, y = _paired_scores(rng, reps, n, rho, auc_a, auc_b)
    return [power.change_of("x", intervals.auroc_estimate(a[y], a[~y]),
                            intervals.auroc_estimate(b[y], b[~y]), ALPHA)
            for a, b in zip(sa, sb)]


def _mde_and_power(rng, n, rho, auc, boundary, direction, reps=800):
    """Mean MDE of the one-sided test over pilot samples at the boundary, and the simulated
    rate at which it decides when the true change is boundary + direction * MDE."""
    pilot = _pilot_changes(rng, 40, n, rho, auc, auc + boundary)
    mde = float(np.mean([power.detectable(c, ALPHA, boundary, direction).mde for c in pilot]))
    sims = _changes(rng, reps, n, rho, auc, auc + boundary + direction * mde, "x")
    if direction > 0:
        return mde, float(np.mean([c.delta - c.lower_arm > boundary for c in sims]))
    return mde, float(np.mean([c.delta + c.upper_arm < boundary for c in sims]))


@pytest.mark.parametrize("n, rho, auc, direction", [
    (GOLD, 0.8, 0.90, 1), (OOF, 0.9, 0.96, 1), ((200, 200), 0.5, 0.8, 1),
    (GOLD, 0.8, 0.95, -1), (OOF, 0.9, 0.96, -1)])
def test_mde_matches_a_simulated_power_curve(n, rho, auc, direction):
    """At the true change -tolerance +- MDE the one-sided test decides with ~80 % power."""
    mde, hit = _mde_and_power(np.random.default_rng(3), n, rho, auc, -TOL, direction)
    print(f"n {n} rho {rho} AUROC {auc} direction {direction:+d}: MDE {mde:.4f}, simulated "
          f"power {hit:.3f}")
    assert 0.75 <= hit <= 0.86, (mde, hit)


def test_rows_needed_scale_as_one_over_n():
    ch = power.Change("x", -0.01, 0.04, 0.04, 0.02, 106, 50)        # no model: constant sd
    d = power.detectable(ch, ALPHA, -TOL, 1, observed=-0.01)
    k = float(norm.ppf(0.8)) + intervals.critical_value(0.9, 50)
    assert d.mde == pytest.approx(k * 0.02)
    assert d.rows_needed == int(np.ceil(106 * (k * 0.02 / 0.01) ** 2))
    assert power.detectable(ch, ALPHA, -TOL, 1, observed=-TOL).rows_needed is None
    assert power.detectable(ch, ALPHA, -TOL, -1, observed=-0.01).rows_needed is None
    # twice the distance needs a quarter of the rows
    far = power.detectable(ch, ALPHA, -TOL, 1, observed=0.0)
    assert far.scale_needed == pytest.approx(d.scale_needed / 4)


def test_rows_needed_reach_the_mde_by_simulation():
    """Scaling a set by scale_needed makes its MDE the observed distance."""
    rng = np.random.default_rng(5)
    pilot = _pilot_changes(rng, 30, GOLD, 0.8, 0.95, 0.945)
    scale = np.mean([power.detectable(c, ALPHA, -TOL, 1, observed=-0.005).scale_needed
                     for c in pilot])
    n = tuple(int(round(x * scale)) for x in GOLD)
    big = _pilot_changes(rng, 10, n, 0.8, 0.95, 0.945)
    mde = np.mean([power.detectable(c, ALPHA, -TOL, 1).mde for c in big])
    assert mde == pytest.approx(0.015, rel=0.15)


def test_oof_estimate_keeps_only_the_train_rows():
    y = np.r_[np.ones(5), np.zeros(5), np.ones(4)]
    s = np.r_[np.arange(10.0)[::-1], np.zeros(4)]
    src = np.array(["train"] * 10 + ["benchmark"] * 4)
    est, labels = power.oof_estimate({"_oof": {"score": s, "label": y, "source": src}})
    assert est.value == 1.0 and len(labels) == 10
    assert power.oof_estimate({"_oof": {"score": s, "label": y}}) == (None, None)
