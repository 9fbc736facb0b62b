"""Lockstep fitting: every L2 probe of a batch solved together, in this process.

Every fit of a sweep (final probe + CV folds of every step, and of every control on the same
data) trains on rows of the same datasets, in the same order. The rows they use are stored once
("the universe", universe.py). Each fit runs scipy's own
`scipy.optimize.minimize(method="L-BFGS-B")` in a thread of its own; its function evaluations
meet at a rendezvous, which computes the values of every waiting fit from one batched X.V
product and one batched X'.R product over the universe, split over threads.

The results are bit-identical to `probe.lbfgs_logistic` fitted on each fit's own matrix: the
solver is the same call with the same options, every row's dot product and every feature's
sum runs over the same non-zeros in the same order in float32, rows a fit does not use only
add zeros, and the per-fit float64 arithmetic is written as in the reference
(tests/test_lockstep.py checks coefficients, iterations and scores).
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import os
import threading

import numpy as np
from scipy.special import expit

from sweeplib import scaler_stats
from sweeplib import solver_check
from sweeplib.universe import Universe


def solver_options(max_iter, tol):
    """minimize(method="L-BFGS-B") options of every L2 fit: scikit-learn's lbfgs settings
    (50 line-search steps, gtol = tol, ftol = 64 eps)."""
    return {"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps}


# --------------------------------------------------------------------------------------------
# One fit's objective (the reference: probe.lbfgs_logistic)
# --------------------------------------------------------------------------------------------
class Fit:
    """One L2 fit: rows of the universe (ascending), labels, weights, C, and the point x its
    solver last asked about."""

    def __init__(self, rows, y, C, *, sample_weight=None, max_iter=1000, tol=1e-4):
        self.rows = np.asarray(rows, dtype=np.int64)
        self.y = y
        self.C, self.max_iter, self.tol = float(C), int(max_iter), float(tol)
        n = len(rows)
        self.sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
        self.total = self.sw.sum()
        self.sign = np.where(y == 1, 1.0, -1.0)
        self.cover = int(self.rows[-1]) + 1 if n else 0
        self.n_iter, self.converged, self.evaluated_at = 0, False, None

    def set_scale(self, mean, scale):
        """Scaler statistics: column means (float64) and scales (float64)."""
        self.mean, self.scale = mean, scale
        self.inv_scale = 1.0 / scale
        self.mu = mean * self.inv_scale
        self.p = len(scale)
        self.x = np.zeros(self.p + 1)

    def product_vector(self):
        """The float32 vector X is multiplied by at the current point."""
        return (self.x[:self.p] * self.inv_scale).astype(np.float32)

    def objective(self, xw32):
        """(loss, residual r as float32) at the current point from X @ v (float32, own rows);
        the lines mirror probe.lbfgs_logistic."""
        w, b = self.x[:self.p], self.x[self.p]
        z = np.asarray(xw32, dtype=np.float64) + (b - self.mu @ w)
        loss = (np.dot(self.sw, np.logaddexp(0.0, -self.sign * z)) / self.total
                + np.dot(w, w) / (2 * self.C * self.total))
        r = self.sw * (expit(z) - (self.y == 1)) / self.total
        self.z = z
        return loss, r

    def gradient(self, r, xtr32):
        """The gradient from r and X' @ r (float32); mirrors probe.lbfgs_logistic."""
        w = self.x[:self.p]
        g = np.empty(self.p + 1)
        g[self.p] = r.sum()
        g[:self.p] = (np.asarray(xtr32, dtype=np.float64) * self.inv_scale
                      - self.mu * g[self.p] + w / (self.C * self.total))
        return g


# --------------------------------------------------------------------------------------------
# Driving all fits at once: one solver thread per fit, evaluations batched at a rendezvous
# --------------------------------------------------------------------------------------------
def _evaluate(universe, fits):
    """Objective and gradient of every fit in `fits` at its current point: one X.V and one
    X'.R product for all of them."""
    order = sorted(range(len(fits)), key=lambda i: -fits[i].cover)
    fits = [fits[i] for i in order]
    cover = np.array([f.cover for f in fits])
    V = np.empty((universe.p, len(fits)), dtype=np.float32)
    for i, f in enumerate(fits):
        V[:, i] = f.product_vector()
    Y = universe.xv(V, cover)
    R = np.zeros((universe.n, len(fits)), dtype=np.float32)
    rs = []
    for i, f in enumerate(fits):
        loss, r = f.objective(Y[f.rows, i])
        R[f.rows, i] = r.astype(np.float32)
        rs.append((loss, r))
    G = universe.xtr(R, cover)
    for i, (f, (loss, r)) in enumerate(zip(fits, rs)):
        f.f_eval = loss
        f.g_eval = f.gradient(r, G[:, i])
        f.evaluated_at = f.x.copy()


class _Stopped(Exception):
    """Raised in a solver thread whose run was stopped (another fit failed, an interrupt)."""


class Rendezvous:
    """Where the solver threads' evaluations meet: once every running fit waits, the driver
    (the calling thread) evaluates them all in one batch and lets them go on."""

    def __init__(self, fits):
        self.fits = fits
        self.cond = threading.Condition()
        self.waiting, self.done = [], []
        self.running, self.error, self.stopped = len(fits), None, False

    def evaluate(self, fit, theta):
        """A solver thread's function evaluation at theta: (loss, gradient)."""
        with self.cond:
            if self.stopped:
                raise _Stopped
            fit.x, fit.ready = np.array(theta, dtype=np.float64), False
            self.waiting.append(fit)
            self.cond.notify_all()
            while not (fit.ready or self.stopped):
                self.cond.wait()
            if not fit.ready:
                raise _Stopped
        return fit.f_eval, fit.g_eval

    def run(self, fit):
        """A solver thread's body: minimize from 0, as probe.lbfgs_logistic."""
        from scipy.optimize import minimize          # scipy.optimize: imported when used
        error = None
        try:
            res = minimize(lambda theta: self.evaluate(fit, theta), np.zeros(fit.p + 1),
                           jac=True, method="L-BFGS-B",
                           options=solver_options(fit.max_iter, fit.tol))
            fit.x, fit.n_iter, fit.converged = res.x, int(res.nit), bool(res.success)
        except _Stopped:
            pass
        except BaseException as e:          # noqa: BLE001 - handed to the driver, re-raised
            error = e
        with self.cond:
            self.running -= 1
            self.done.append(fit)
            if error is not None and self.error is None:
                self.error = error
            self.cond.notify_all()

    def next_batch(self):
        """Wait until every running fit waits (or a fit failed); (batch, fits that stopped
        since the last batch), both in the order of self.fits."""
        with self.cond:
            while len(self.waiting) < self.running and self.error is None:
                self.cond.wait()
            if self.error is not None:
                raise self.error
            rank = {id(f): i for i, f in enumerate(self.fits)}
            batch = sorted(self.waiting, key=lambda f: rank[id(f)])
            done = sorted(self.done, key=lambda f: rank[id(f)])
            self.waiting, self.done = [], []
        return batch, done

    def release(self, batch):
        """Let the evaluated fits go on."""
        with self.cond:
            for f in batch:
                f.ready = True
            self.cond.notify_all()

    def stop(self):
        """Make every waiting (and later) evaluation raise _Stopped."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


def solve(universe, fits, on_stop=None):
    """Run L-BFGS-B on every fit, each in its own thread, its evaluations batched with the
    others' until each converges or hits a limit; returns the number of rounds (batched
    evaluations). on_stop(fit) is called (in this thread) as each fit stops. An exception of
    a fit's thread stops the others and is raised here."""
    meet = Rendezvous(fits)
    threads = [threading.Thread(target=meet.run, args=(f,), name=f"lbfgs-{i}", daemon=True)
               for i, f in enumerate(fits)]
    rounds = 0
    try:
        for t in threads:
            t.start()
        while True:
            batch, done = meet.next_batch()
            for f in done:
                if on_stop is not None:
                    on_stop(f)
            if not batch:
                return rounds
            _evaluate(universe, batch)
            rounds += 1
            meet.release(batch)
    finally:
        meet.stop()
        for t in threads:
            if t.ident is not None:
                t.join()


def certificates(universe, fits):
    """Solver record with the duality gap (solver_check.certificate) of every fit at its final
    point: one batched X'.c, plus X.v / X'.r for a fit whose final point is not its last
    evaluated one (after a failed line search the solver goes back to the previous point)."""
    stale = [f for f in fits if not np.array_equal(f.x, f.evaluated_at)]
    if stale:
        _evaluate(universe, stale)             # scores z and gradient at the final point
    order = sorted(range(len(fits)), key=lambda i: -fits[i].cover)
    cover = np.array([fits[i].cover for i in order])
    Cmat = np.zeros((universe.n, len(fits)), dtype=np.float64)
    alphas = {}
    for col, i in enumerate(order):
        alphas[i], c = solver_check.dual_point(fits[i].z, fits[i].sign, fits[i].sw)
        Cmat[fits[i].rows, col] = c
    G = universe.xtr(Cmat, cover, data=lambda v: v.astype(np.float64), dtype=np.float64)
    out = [None] * len(fits)
    for col, i in enumerate(order):
        f = fits[i]
        cert = solver_check.certificate(f.z, f.sign, f.sw, f.x[:f.p], f.C, f.inv_scale,
                                        alphas[i], G[:, col], f.g_eval)
        out[i] = solver_check.record(f.n_iter, f.converged, f.tol, f.max_iter, **cert)
    return out


def certify_one(X, y, sample_weight, C, tol, max_iter, mean, scale, w, b, n_iter, converged):
    """The solver record of one fit on its own matrix X (the per-fit path: execution.fit_task);
    the same numbers as certificates() gives in lockstep."""
    fit = Fit(np.arange(X.shape[0]), y, C, sample_weight=sample_weight, max_iter=max_iter,
              tol=tol)
    fit.set_scale(mean, scale)
    fit.x = np.r_[w, b]
    _, r = fit.objective(X @ fit.product_vector())
    g = fit.gradient(r, X.T @ r.astype(np.float32))
    alpha, c = solver_check.dual_point(fit.z, fit.sign, fit.sw)
    cert = solver_check.certificate(fit.z, fit.sign, fit.sw, w, C, fit.inv_scale, alpha,
                                    X.T @ c, g)
    return solver_check.record(n_iter, converged, tol, max_iter, **cert)


def usable_cores():
    """Cores this process may run on: its CPU affinity where the platform has it (a
    container or `taskset` limits it below os.cpu_count()), else os.cpu_count()."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def thread_count(jobs):
    """Threads for the batched products: --jobs, -1 = all usable cores (usable_cores), at
    most that many."""
    n = usable_cores()
    if jobs is None or jobs == 0:
        return 1
    return max(1, n + 1 + jobs if jobs < 0 else min(jobs, n))


def fit_all(universe, fits, on_stop=None):
    """Scaler statistics, lockstep L-BFGS-B and certificates of every fit; returns the
    scaler statistics per fit and the number of rounds (on_stop: see solve)."""
    stats = scaler_stats.batch(universe, [f.rows for f in fits])
    for f, s in zip(fits, stats):
        f.set_scale(s["mean"], s["scale_"])
    rounds = solve(universe, fits, on_stop)
    for f, c in zip(fits, certificates(universe, fits)):
        f.certificate = c
    return stats, rounds


def new_pool(threads):
    """A thread pool for the products (None for one thread)."""
    if threads <= 1:
        return None
    _one_malloc_arena()
    return concurrent.futures.ThreadPoolExecutor(threads)


def _one_malloc_arena():
    """Let threads allocate from the main heap (glibc's M_ARENA_MAX = 1) rather than an arena
    each, whose freed blocks glibc keeps: measured 25-30 MB less peak memory, same speed.
    Elsewhere (no glibc) nothing changes."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 1)        # M_ARENA_MAX is -8 in malloc.h
    except (OSError, AttributeError):
        pass


# --------------------------------------------------------------------------------------------
# Plans (probe.Plan) -> fits
# --------------------------------------------------------------------------------------------
def plan_positions(plans):
    """(blocks, positions): blocks = [(dataset matrix, union of the rows the L2 plans use)] in
    order of first use; per plan the universe position of each mix row, or None when the plan
    cannot run in lockstep (not L2, or its rows are not in the universe's order)."""
    order, union = [], {}
    for plan in plans:
        if plan.cfg.penalty != "l2":
            continue
        for A, idx in plan.mix.parts:
            if id(A) not in union:
                order.append(A)
                union[id(A)] = []
            union[id(A)].append(np.asarray(idx))
    rows = {key: np.unique(np.concatenate(v)) for key, v in union.items()}
    offset, start = {}, 0
    for A in order:
        offset[id(A)] = start
        start += len(rows[id(A)])
    positions = []
    for plan in plans:
        if plan.cfg.penalty != "l2":
            positions.append(None)
            continue
        pos = np.concatenate([offset[id(A)] + np.searchsorted(rows[id(A)], idx)
                              for A, idx in plan.mix.parts])
        if plan.mix.rows is not None:
            pos = pos[plan.mix.rows]
        positions.append(pos if np.all(np.diff(pos) > 0) else None)
    return [(A, rows[id(A)]) for A in order], positions


def run_plans(plans, threads=1, progress=None):
    """Fit every L2 plan's final probe and CV folds in lockstep. Returns, per plan, None
    (not eligible: fit it elsewhere) or [result of the full mix, then of each fold], each a
    dict: coef, intercept, scaler (StandardScaler attributes), n_iter, converged, scores
    (float64 log-odds of the rows the fit is scored on), solver (certificate).
    progress(plan) is called when the last fit of a plan stops."""
    blocks, positions = plan_positions(plans)
    if not any(p is not None for p in positions):
        return [None] * len(plans)
    pool = new_pool(threads)
    try:
        universe = Universe(blocks, blocks[0][0].shape[1], threads, pool)
        fits, owners, score_at = [], [], []
        for i, (plan, pos) in enumerate(zip(plans, positions)):
            if pos is None:
                continue
            everything = np.arange(len(plan.mix.y))
            for rows, score_rows in [(everything, everything)] + list(plan.folds):
                sw = None if plan.sample_weight is None else plan.sample_weight[rows]
                fits.append(Fit(pos[rows], plan.mix.y[rows], plan.cfg.C, sample_weight=sw,
                                max_iter=plan.cfg.max_iter, tol=plan.cfg.tol))
                owners.append(i)
                score_at.append(pos[score_rows])
        stats, rounds = fit_all(universe, fits, _plan_done(plans, fits, owners, progress))
        results = [_result(f, s) for f, s in zip(fits, stats)]
        _score(universe, results, score_at)
    finally:
        if pool is not None:
            pool.shutdown()
    out = [None if pos is None else [] for pos in positions]
    for i, res in zip(owners, results):
        out[i].append(res)
    return out


def _plan_done(plans, fits, owners, progress):
    """on_stop for solve: calls progress(plan) when the last of a plan's fits stops."""
    if progress is None:
        return None
    owner = {id(f): i for f, i in zip(fits, owners)}
    left = {i: owners.count(i) for i in set(owners)}

    def on_stop(fit):
        """One fit stopped."""
        i = owner[id(fit)]
        left[i] -= 1
        if left[i] == 0:
            progress(plans[i])
    return on_stop


def _result(fit, stats):
    """A finished fit as plain arrays (see run_plans)."""
    w, b = fit.x[:fit.p].copy(), float(fit.x[fit.p])
    return {"coef": w, "intercept": b - np.dot(stats["mean"] / stats["scale_"], w),
            "scaler": {k: stats[k] for k in ("mean_", "var_", "scale_", "n_samples_seen_")},
            "n_iter": fit.n_iter, "converged": fit.converged, "solver": fit.certificate}


def _score(universe, results, score_at):
    """Float64 log-odds of every fit's score rows: one batched product (probe.decision's
    arithmetic: X @ (coef / scale) + intercept)."""
    cover = np.array([int(pos[-1]) + 1 for pos in score_at])
    order = np.argsort(-cover, kind="stable")
    W = np.empty((universe.p, len(results)), dtype=np.float64)
    for col, i in enumerate(order):
        W[:, col] = results[i]["coef"].astype(np.float64) / results[i]["scaler"]["scale_"]
    Y = universe.xv(W, cover[order], dtype=np.float64)
    for col, i in enumerate(order):
        results[i]["scores"] = Y[score_at[i], col] + results[i]["intercept"]
