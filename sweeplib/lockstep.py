"""Lockstep fitting: every L2 probe of a batch solved together, in this process.

Every fit of a sweep (final probe + CV folds of every step, and of every control on the same
data) trains on rows of the same datasets, in the same order. The rows they use are stored once
("the universe", as row chunks of the transposed matrix), and scipy's own L-BFGS-B step routine
(`setulb`, the routine `scipy.optimize.minimize(method="L-BFGS-B")` drives) is driven for all
fits at once: each round, every fit that asks for a function value gets it from one batched
X.V product and one batched X'.R product over the universe, split over threads.

The results are bit-identical to `probe.lbfgs_logistic` fitted on each fit's own matrix: every
row's dot product and every feature's sum runs over the same non-zeros in the same order in
float32, rows a fit does not use only add zeros, and the per-fit float64 arithmetic is written
as in the reference (tests/test_lockstep.py checks coefficients, iterations and scores).
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import os
import re

import numpy as np
from scipy.special import expit

from sweeplib import scaler_stats
from sweeplib import solver_check

MIN_SCIPY = (1, 15)            # setulb's integer task interface (scipy's C L-BFGS-B, 1.15+)


def scipy_version_at_least(version, minimum=MIN_SCIPY):
    """True when a scipy version string ('1.15.2', '1.16.0rc1') is >= minimum."""
    parts = [re.match(r"\d*", piece).group() for piece in version.split(".")[:len(minimum)]]
    return all(parts) and tuple(map(int, parts)) >= minimum


try:                                           # accumulating sparse kernels (C += A @ B)
    import scipy
    from scipy.sparse import _sparsetools
    # setulb with integer task arrays needs scipy >= 1.15; else fits take the per-fit path
    HAVE_KERNELS = (hasattr(_sparsetools, "csr_matvecs") and hasattr(_sparsetools, "csc_matvecs")
                    and scipy_version_at_least(scipy.__version__))
except ImportError:                            # pragma: no cover - depends on the scipy build
    _sparsetools, HAVE_KERNELS = None, False

MEMORY = 10                    # L-BFGS corrections (minimize's default maxcor)
MAX_LS = 50                    # line-search steps (scikit-learn's setting)
MAX_FUN = 15000                # minimize's default maxfun for L-BFGS-B
FACTR = 64.0                   # ftol = 64 * eps, as scikit-learn (factr = ftol / eps)
TASK_FG, TASK_NEW_X, TASK_CONV, TASK_STOP = 3, 1, 4, 5
CHUNKS_PER_THREAD = 4          # row chunks per thread (X.V tasks; memory while building)


# --------------------------------------------------------------------------------------------
# The universe: the union of the fits' rows, stored once
# --------------------------------------------------------------------------------------------
class Universe:
    """Rows of several datasets, stacked, stored as row chunks of X' (CSR of the transpose)
    so that X.V (per chunk) and X'.R (per feature range) both split over threads."""

    def __init__(self, blocks, n_features, threads=1, pool=None):
        """blocks: [(CSR matrix, ascending row indices)], stacked in this order."""
        self.p, self.threads = n_features, max(1, threads)
        self.pool = pool
        row_nnz = [np.diff(A.indptr)[idx] for A, idx in blocks]
        total = sum(int(k.sum()) for k in row_nnz) or 1
        target = max(1, total // (CHUNKS_PER_THREAD * self.threads))
        pieces, start = [], 0
        for (A, idx), k in zip(blocks, row_nnz):   # chunk borders at every block border too
            cum = np.cumsum(k)
            cuts = np.searchsorted(cum, np.arange(target, int(cum[-1]) if len(cum) else 0,
                                                  target), side="right") + 1
            cuts = np.unique(np.r_[0, cuts[cuts < len(idx)], len(idx)])
            pieces += [(A, idx[a:b], start + a) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
            start += len(idx)
        self.n = start
        self.chunks = list(self._map(lambda piece: _transpose(*piece), pieces))
        counts = np.zeros(self.p, dtype=np.int64)
        for _, _, XT in self.chunks:
            counts += np.diff(XT.indptr)
        cum = np.concatenate([[0], np.cumsum(counts)])
        bounds = np.searchsorted(cum, np.linspace(0, cum[-1], self.threads + 1)[1:-1])
        self.feature_ranges = [(int(a), int(b)) for a, b in
                               zip(np.r_[0, bounds], np.r_[bounds, self.p]) if b > a]

    @property
    def nbytes(self):
        """Bytes held by the chunks."""
        return sum(c[2].data.nbytes + c[2].indices.nbytes + c[2].indptr.nbytes
                   for c in self.chunks)

    def _map(self, fn, items):
        """fn over items, in the thread pool when there is one."""
        items = list(items)
        if self.pool is None or len(items) < 2:
            return [fn(x) for x in items]
        return list(self.pool.map(fn, items))

    def xv(self, V, cover, dtype=np.float32):
        """X @ V for the universe rows (n x k); column i needs rows < cover[i] only (cover is
        non-increasing), other entries are left 0. float64: the values are cast chunk by
        chunk (a product in float64, as scipy's with float32 data and a float64 vector)."""
        k = V.shape[1]
        Y = np.zeros((self.n, k), dtype=dtype)

        def one(chunk):
            """X @ V for one row chunk."""
            start, stop, XT = chunk
            kc = int(np.count_nonzero(cover > start))
            if kc:
                Vc = np.ascontiguousarray(V[:, :kc], dtype=dtype)
                Yc = np.zeros((stop - start, kc), dtype=dtype)
                _sparsetools.csc_matvecs(stop - start, self.p, kc, XT.indptr, XT.indices,
                                         XT.data.astype(dtype, copy=False), Vc.ravel(),
                                         Yc.ravel())
                Y[start:stop, :kc] = Yc
        self._map(one, self.chunks)
        return Y

    def xtr(self, R, cover, data=None, dtype=np.float32):
        """X' @ R (p x k) for R over the universe rows (rows >= cover[i] of column i are 0);
        `data` maps a chunk's values to the values multiplied (default: themselves)."""
        k = R.shape[1]
        G = np.zeros((self.p, k), dtype=dtype)
        R = np.ascontiguousarray(R, dtype=dtype)

        def one(rng):
            """X' @ R for one feature range."""
            f0, f1 = rng
            out = np.zeros((f1 - f0, k), dtype=dtype)
            for start, stop, XT in self.chunks:
                kc = int(np.count_nonzero(cover > start))
                if not kc:
                    continue
                a, b = XT.indptr[f0], XT.indptr[f1]
                ptr = (XT.indptr[f0:f1 + 1] - a).astype(XT.indices.dtype)
                vals = XT.data[a:b]
                vals = (vals if data is None else data(vals)).astype(dtype, copy=False)
                Rc = R[start:stop] if kc == k else np.ascontiguousarray(R[start:stop, :kc])
                acc = out if kc == k else np.ascontiguousarray(out[:, :kc])
                _sparsetools.csr_matvecs(f1 - f0, stop - start, kc, ptr, XT.indices[a:b], vals,
                                         Rc.ravel(), acc.ravel())
                if kc != k:
                    out[:, :kc] = acc
            G[f0:f1] = out
        self._map(one, self.feature_ranges)
        return G

    def column(self, j):
        """(universe rows, values) of feature j, rows ascending."""
        rows, vals = [], []
        for start, _, XT in self.chunks:
            a, b = XT.indptr[j], XT.indptr[j + 1]
            rows.append(XT.indices[a:b].astype(np.int64) + start)
            vals.append(XT.data[a:b])
        return np.concatenate(rows), np.concatenate(vals)


def _transpose(A, idx, offset):
    """(first row, stop row, CSR of rows idx of A transposed, int32 indices)."""
    XT = A[idx].T.tocsr()
    XT.sort_indices()
    XT.indices = XT.indices.astype(np.int32, copy=False)
    XT.indptr = XT.indptr.astype(np.int32, copy=False)
    return offset, offset + len(idx), XT


# --------------------------------------------------------------------------------------------
# One fit's solver state and objective (the reference: probe.lbfgs_logistic)
# --------------------------------------------------------------------------------------------
class Fit:
    """One L2 fit: rows of the universe (ascending), labels, weights, C and its solver state."""

    def __init__(self, rows, y, C, *, sample_weight=None, max_iter=1000, tol=1e-4):
        self.rows = np.asarray(rows, dtype=np.int64)
        self.y = y
        self.C, self.max_iter, self.tol = float(C), int(max_iter), float(tol)
        n = len(rows)
        self.sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
        self.total = self.sw.sum()
        self.sign = np.where(y == 1, 1.0, -1.0)
        self.cover = int(self.rows[-1]) + 1 if n else 0
        self.n_iter, self.nfev, self.converged = 0, 0, False

    def set_scale(self, mean, scale):
        """Scaler statistics: column means (float64) and scales (float64)."""
        self.mean, self.scale = mean, scale
        self.inv_scale = 1.0 / scale
        self.mu = mean * self.inv_scale
        self.p = len(scale)
        self.x = np.zeros(self.p + 1)
        self.g = np.zeros(self.p + 1)

    def start(self):
        """Allocate the solver's state, as scipy's driver does, at x = 0."""
        p = self.p
        self.f = np.array(0.0)
        m = MEMORY
        self.wa = np.zeros(2 * m * (p + 1) + 5 * (p + 1) + 11 * m * m + 8 * m, np.float64)
        self.iwa = np.zeros(3 * (p + 1), np.int32)
        self.task = np.zeros(2, np.int32)
        self.ln_task = np.zeros(2, np.int32)
        self.lsave = np.zeros(4, np.int32)
        self.isave = np.zeros(44, np.int32)
        self.dsave = np.zeros(29, np.float64)
        self.nbd = np.zeros(p + 1, np.int32)
        self.bound = np.zeros(p + 1, np.float64)
        self.evaluated_at = None

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

    def advance(self):
        """Step the solver until it asks for a new function value (True) or stops (False),
        exactly as scipy's L-BFGS-B driver loop does."""
        from scipy.optimize import _lbfgsb           # scipy.optimize: imported when used
        while True:
            self.g = self.g.astype(np.float64)
            _lbfgsb.setulb(MEMORY, self.x, self.bound, self.bound, self.nbd, self.f, self.g,
                           FACTR, self.tol, self.wa, self.iwa, self.task, self.lsave,
                           self.isave, self.dsave, MAX_LS, self.ln_task)
            if self.task[0] == TASK_FG:
                if not np.array_equal(self.x, self.evaluated_at):
                    return True
                self.f, self.g = self.f_eval, self.g_eval   # minimize's memoization
                continue
            if self.task[0] == TASK_NEW_X:
                self.n_iter += 1
                if self.n_iter >= self.max_iter:
                    self.task[0], self.task[1] = TASK_STOP, 504
                elif self.nfev > MAX_FUN:
                    self.task[0], self.task[1] = TASK_STOP, 502
                continue
            self.converged = bool(self.task[0] == TASK_CONV)
            return False


# --------------------------------------------------------------------------------------------
# Driving all fits at once
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
        f.f = f.f_eval = loss
        f.g = f.g_eval = f.gradient(r, G[:, i])
        f.evaluated_at = f.x.copy()
        f.nfev += 1


def solve(universe, fits, on_stop=None):
    """Run L-BFGS-B on every fit in lockstep until each converges or hits a limit; returns
    the number of rounds (batched evaluations). on_stop(fit) is called as each fit stops."""
    _evaluate(universe, fits)                   # minimize evaluates at x0 before the first step
    rounds = 1
    active = list(fits)
    while active:
        need = [f for f in active if f.advance()]
        if on_stop is not None:
            going = {id(f) for f in need}
            for f in active:
                if id(f) not in going:
                    on_stop(f)
        active = need
        if need:
            _evaluate(universe, need)
            rounds += 1
    return rounds


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
        f.start()
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
