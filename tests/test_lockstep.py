"""Lockstep fitting (lockstep.py, scaler_stats.py) against the per-fit reference path
(execution.fit_task -> probe.lbfgs_logistic on each fit's own matrix): the same bits."""
from dataclasses import replace

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from conftest import deadline

import common
from sweeplib import lockstep
from sweeplib import probe
from sweeplib import scaler_stats
from sweeplib import solver_check
from sweeplib import data
from sweeplib.splits import make_splits
from sweeplib import execution
from sweeplib.config import RunConfig

CFG = RunConfig(C=10.0, penalty="l2", max_iter=1000, cv_folds=3, tol=1e-4)


@pytest.fixture
def lockstep_ran(monkeypatch):
    """How many plans lockstep.run_plans fitted (each comparison with the per-fit reference
    must have gone through the lockstep path, or it compares the reference with itself)."""
    count = {"plans": 0}
    real = lockstep.run_plans

    def spy(plans, *args, **kwargs):
        out = real(plans, *args, **kwargs)
        count["plans"] += sum(r is not None for r in out)
        return out
    monkeypatch.setattr(lockstep, "run_plans", spy)
    return count


@pytest.fixture(scope="module")
def loaded(tiny_cache):
    datasets, _, _ = data.load_cache(tiny_cache, 40, list(common.DATASETS))
    return datasets


def reference(plan):
    """Every fit of a plan on its own matrix, one by one (today's per-fit path)."""
    everything = np.arange(len(plan.mix.y))
    return [execution.fit_task(plan.cfg, plan.seed, plan.mix.parts, plan.mix.rows, plan.mix.y,
                           rows, score_rows, plan.sample_weight)
            for rows, score_rows in [(everything, everything)] + list(plan.folds)]


def assert_same_fits(new, ref):
    """Coefficients, intercept, iterations, convergence, scores, scaler and solver record."""
    assert len(new) == len(ref)
    for k, (a, b) in enumerate(zip(new, ref)):
        assert np.array_equal(a[0][-1].coef_, b[0][-1].coef_), k
        assert np.array_equal(a[0][-1].intercept_, b[0][-1].intercept_), k
        assert a[1:3] == b[1:3], k                                 # converged, n_iter
        assert np.array_equal(a[3], b[3]), k                       # float64 scores
        for attr in ("scale_", "var_", "mean_", "n_samples_seen_", "n_features_in_"):
            va, vb = getattr(a[0][0], attr), getattr(b[0][0], attr)
            assert np.array_equal(va, vb) and np.asarray(va).dtype == np.asarray(vb).dtype, attr
        assert a[4] == b[4], k                                     # solver record


def plans_for(loaded, steps, cfg=CFG, seeds=(0,), **extra):
    """Plans of the given steps and seeds on the tiny cache."""
    out = []
    for seed in seeds:
        splits = make_splits(loaded, 0.2, seed)
        out += [probe.plan_step(common.step_spec(k), loaded, splits, replace(cfg, **extra), seed)
                for k in steps]
    return out


@pytest.mark.parametrize("threads", [1, 2])
def test_lockstep_equals_per_fit_reference(loaded, threads, lockstep_ran):
    plans = plans_for(loaded, [0, 1, 2, 3, 4], seeds=(0, 1))     # two splits in one universe
    with threadpool_limits(1):
        new = execution.execute(plans, jobs=threads)
        assert lockstep_ran["plans"] == len(plans)                  # not the per-fit path
        for plan, fits in zip(plans, new):
            assert_same_fits(fits, reference(plan))
    assert all(f[4]["n_iter"] > 3 for fits in new for f in fits)   # real fits, not trivial


def test_lockstep_with_weights_and_a_fixed_budget(loaded, lockstep_ran):
    """Sample weights (class and source weighting) and a row subset of the mix (budget)."""
    plans = plans_for(loaded, [1, 3], class_weight="balanced", source_weight="equal")
    budget = plans_for(loaded, [3], budget_n=200)
    with threadpool_limits(1):
        new = execution.execute(plans + budget, jobs=2)
        assert lockstep_ran["plans"] == len(plans + budget)
        for plan, fits in zip(plans + budget, new):
            assert plan.sample_weight is not None or plan.mix.rows is not None
            assert_same_fits(fits, reference(plan))


def test_plans_lockstep_cannot_take_fall_back_to_per_fit_tasks(loaded):
    """An L1 plan, and a mix whose sources are not in the universe's order, are fitted one
    by one; the L2 plans next to them still run in lockstep."""
    splits = make_splits(loaded, 0.2, 0)
    backwards = common.StepSpec(7, "backwards", ("benchmark", "train"), "?")
    plans = [probe.plan_step(common.STEPS[3], loaded, splits, CFG, 0),
             probe.plan_step(backwards, loaded, splits, CFG, 0),
             probe.plan_step(common.STEPS[0], loaded, splits, replace(CFG, penalty="l1"), 0)]
    blocks, positions = lockstep.plan_positions(plans)
    assert positions[0] is not None and positions[1] is None and positions[2] is None
    with threadpool_limits(1):
        new = execution.execute(plans, jobs=1)
        for plan, fits in zip(plans[:2], new[:2]):
            assert_same_fits(fits, reference(plan))
    assert "objective" not in new[2][0][4] and new[2][0][4]["n_iter"] > 0     # L1: no gap


def test_scaler_statistics_exact_path_equals_scikit_learn(loaded, monkeypatch):
    """With the rounding check forced to doubt every column, every variance is recomputed
    value by value; both paths give scikit-learn's StandardScaler exactly."""
    from sklearn.preprocessing import StandardScaler
    plan = plans_for(loaded, [3])[0]
    blocks, positions = lockstep.plan_positions([plan])
    universe = lockstep.Universe(blocks, plan.mix.n_features)
    rows = [positions[0][tr] for tr, _ in plan.folds] + [positions[0]]
    mats = [execution.rows_matrix(plan.mix.parts, None, tr) for tr, _ in plan.folds] + [plan.mix.X]
    fast = scaler_stats.batch(universe, rows)
    monkeypatch.setattr(scaler_stats, "SAFETY", 1e30)
    slow = scaler_stats.batch(universe, rows)
    for s, X in zip(slow, mats):                   # every column holding a value
        assert s["exact_recomputed"] == np.count_nonzero(np.diff(X.tocsc().indptr))
    for f, s, X in zip(fast, slow, mats):
        ref = StandardScaler(with_mean=False).fit(X)
        mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
        for got in (f, s):
            assert np.array_equal(got["mean"], mean)
            for attr in ("mean_", "var_", "scale_", "n_samples_seen_"):
                assert np.array_equal(got[attr], getattr(ref, attr)), attr


def test_duality_gap_bounds_the_distance_to_the_optimum(loaded):
    """The recorded gap is >= objective - optimum (optimum from a much tighter solve) and
    shrinks when the solver runs to a tight tolerance."""
    loose = plans_for(loaded, [0, 3])
    tight = plans_for(loaded, [0, 3], tol=1e-10, max_iter=20000)
    with threadpool_limits(1):
        a, b = execution.execute(loose, jobs=1), execution.execute(tight, jobs=1)
    for fits_a, fits_b in zip(a, b):
        for fa, fb in zip(fits_a, fits_b):
            s, t = fa[4], fb[4]
            assert s["objective"] >= t["objective"] - 1e-12
            assert s["duality_gap"] >= s["objective"] - t["objective"] - 1e-9
            assert t["relative_gap"] < 1e-3 and t["relative_gap"] <= s["relative_gap"]
            assert 0 <= s["relative_gap"] <= 1 and s["max_abs_gradient"] <= 1e-4
            # the report's gap / D bounds P / P* - 1 (P* from the tight solve, itself >= P*)
            bound = solver_check.excess_bound(s)
            assert bound >= s["objective"] / t["objective"] - 1 - 1e-12
            assert bound >= s["relative_gap"] and s["stop"] == solver_check.STOP_GRADIENT


def test_exact_variance_is_scikit_learns_float64_two_pass(loaded):
    """The value-by-value fallback reproduces scikit-learn's float64 variance bit for bit
    (its Cython pass run on float64 data, before any float32 cast)."""
    from sklearn.utils.sparsefuncs_fast import _csr_mean_variance_axis0
    plan = plans_for(loaded, [3])[0]
    blocks, positions = lockstep.plan_positions([plan])
    universe = lockstep.Universe(blocks, plan.mix.n_features, threads=2)
    tr = plan.folds[0][0]
    X = execution.rows_matrix(plan.mix.parts, None, tr).astype(np.float64)
    means, variances, _ = _csr_mean_variance_axis0(X.data, X.shape[0], X.shape[1], X.indices,
                                                   X.indptr, np.ones(X.shape[0]))
    member = np.zeros(universe.n, dtype=bool)
    member[positions[0][tr]] = True
    counts = np.diff(X.tocsc().indptr)
    assert counts.max() > 20                          # long enough for summation order to matter
    ours = [scaler_stats._exact_variance(universe, j, member, float(X.shape[0]), means[j],
                                         float(counts[j])) for j in range(X.shape[1])]
    assert np.array_equal(np.array(ours), np.asarray(variances))


def test_thread_count_follows_the_cpu_affinity(monkeypatch):
    monkeypatch.setattr(lockstep.os, "cpu_count", lambda: 64)
    if hasattr(lockstep.os, "sched_getaffinity"):
        monkeypatch.setattr(lockstep.os, "sched_getaffinity", lambda pid: {0, 3})
        assert lockstep.usable_cores() == 2
        assert lockstep.thread_count(-1) == 2 and lockstep.thread_count(-2) == 1
        assert lockstep.thread_count(8) == 2 and lockstep.thread_count(1) == 1
    monkeypatch.delattr(lockstep.os, "sched_getaffinity", raising=False)
    assert lockstep.usable_cores() == 64 and lockstep.thread_count(-1) == 64


def test_stop_reasons_tell_the_two_convergence_tests_and_the_caps_apart():
    r = solver_check.stop_reason
    assert r(12, True, 1e-4, 1000, 5e-5) == solver_check.STOP_GRADIENT
    assert r(12, True, 1e-4, 1000, 3e-4) == solver_check.STOP_FLAT
    assert r(1000, False, 1e-4, 1000, 3e-4) == solver_check.STOP_MAX_ITER
    assert r(40, False, 1e-4, 1000, 3e-4) == solver_check.STOP_EARLY
    assert r(7, True, 1e-4, 1000) == solver_check.STOP_CONVERGED          # saga: no gradient
    old = {"n_iter": 12, "converged": True, "stop": "converged", "tol": 1e-4,
           "max_abs_gradient": 3e-4}                                      # an older record
    assert solver_check.stop_label(old, 1000) == solver_check.STOP_FLAT
    assert solver_check.stop_label(dict(old, converged=False, n_iter=1000,
                                        stop="iteration limit"), 1000) == solver_check.STOP_MAX_ITER
    assert solver_check.excess_bound({"duality_gap": 0.5, "dual_bound": 2.0}) == 0.25
    assert solver_check.excess_bound({"duality_gap": 0.5, "dual_bound": 0.0}) is None
    assert solver_check.excess_bound({}) is None


def test_unconverged_fits_one_warning_saying_which_and_why(tiny_cache, tmp_path, capsys):
    import run_all
    from sweeplib import analysis, render, report
    out = tmp_path / "out"
    assert run_all.main(["--cache-dir", str(tiny_cache), "--results-dir", str(out), "--steps",
                         "0", "3", "--max-iter", "5", "--quiet", "--jobs", "1"]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "converging" in ln]
    assert lines == ["warning: solver stopped before converging in step 0: final fit + 5 CV "
                     "folds; step 3: final fit + 5 CV folds (12 hit the --max-iter 5 cap); "
                     "recorded as converged: false. Raise --max-iter; the report's Solver "
                     "section shows how far each fit stopped from its optimum"]
    text = render.render_text(report.build_sections(analysis.analyze(out)))
    solver = text[text.index("Solver: how far"):]
    assert "P/P*-1 at most" in solver and "hit --max-iter (CV:" in solver
    assert "gap / D" in solver and solver_check.STOP_LEGEND[:40] in solver.replace("\n", " ")


def solver_threads():
    """The solver threads still alive (lockstep.solve names them lbfgs-<i>)."""
    import threading
    return [t for t in threading.enumerate() if t.name.startswith("lbfgs-")]


def test_a_fit_that_fails_stops_the_others_and_its_error_is_raised(loaded, monkeypatch):
    """An exception in one solver thread (here its 4th evaluation) reaches the caller as it
    is; the threads waiting at the rendezvous are let go, none is left behind."""
    real, calls = lockstep.Rendezvous.evaluate, {"n": 0}

    def evaluate(self, fit, theta):
        if fit is self.fits[2]:
            calls["n"] += 1
            if calls["n"] == 4:
                raise ValueError("fit 2 failed")
        return real(self, fit, theta)
    monkeypatch.setattr(lockstep.Rendezvous, "evaluate", evaluate)
    with deadline(60), threadpool_limits(1), pytest.raises(ValueError, match="fit 2 failed"):
        execution.execute(plans_for(loaded, [0, 3]), jobs=2)
    assert calls["n"] == 4 and solver_threads() == []


def test_an_interrupt_at_the_rendezvous_ends_every_solver_thread(loaded, monkeypatch):
    """Ctrl-C lands in the main thread (the one driving the batches): it propagates as it
    is, and every solver thread ends (none waits at the rendezvous for good)."""
    real, rounds = lockstep._evaluate, {"n": 0}

    def evaluate(universe, fits):
        rounds["n"] += 1
        if rounds["n"] == 3:
            raise KeyboardInterrupt
        return real(universe, fits)
    monkeypatch.setattr(lockstep, "_evaluate", evaluate)
    with deadline(60), threadpool_limits(1), pytest.raises(KeyboardInterrupt):
        execution.execute(plans_for(loaded, [0, 3]), jobs=2)
    assert rounds["n"] == 3 and solver_threads() == []


def test_fits_that_stop_early_leave_the_others_running(loaded):
    """Fits stop after different numbers of iterations (max_iter 3 for some): each batch
    holds only the fits still running, and progress is told as each plan's last fit stops,
    in the plans' order within a round."""
    plans = plans_for(loaded, [0, 3]) + plans_for(loaded, [1], max_iter=3)
    told = []
    with threadpool_limits(1):
        new = execution.execute(plans, jobs=2, progress=lambda plan: told.append(plan))
        assert_same_fits(new[2], reference(plans[2]))
    assert told[0] is plans[2] and sorted(map(id, told)) == sorted(map(id, plans))
    assert all(f[2] == 3 for f in new[2]) and all(f[2] > 3 for f in new[0] + new[1])
