"""Probe families and representations: the method arms of the sweep.

    python run_all.py --demo                              # the default method set
    python run_all.py --demo --methods lr                 # the reference only (today's run)
    python run_all.py --demo --methods lr massmean+rownorm ksparse+srcstd

An arm is a family fitted on a representation ("massmean+rownorm"; "lrcv" = "lrcv+raw"). Every
family is linear in its representation: a fit returns a `Linear` (weights, intercept, a record),
scored as rep(x) @ w + b; its saved form is those plain arrays (methods_run.py writes them, with
the representation's own arrays). A family sees only a training mix: its rows in the
representation, labels, loss weights and the reference's CV folds within the mix. No family is
ever given an eval label. A representation is a per-dataset transform (rows x feature
scaling, and optionally a per-dataset shift): `srcstd` computes each dataset's statistics over
all of its rows, held-out ones included (unlabelled), and is marked transductive.

Adding a family: write its fit(train, cfg) -> Linear below and add one row to FAMILIES.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from sweeplib import data, probe
from sweeplib.base import InputError

K_GRID = (16, 64, 256)                        # k-sparse: k chosen by CV on the training mix
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # lrcv: C chosen by CV on the training mix
MEAN_SUFFIX = "_mean_activations.npy"
DEFAULT_METHODS = ("lr", "massmean", "ksparse", "massmean+rownorm", "ksparse+rownorm",
                   "massmean+srcstd", "massmean+mean", "ksparse+mean")
REFERENCE = "lr"


# --------------------------------------------------------------------------------------------
# Rows in a representation: sparse scaled rows minus an optional per-dataset shift
# --------------------------------------------------------------------------------------------
@dataclass
class Rows:
    """Rows of a representation without copying them: parts [(RepData, row indices)], stacked
    in order; z = X - shift of each part's dataset. Supports `rows @ v` and `rows.T @ r`
    (probe.lbfgs_logistic takes it as its matrix)."""
    parts: list

    @property
    def shape(self):
        """(n, p)."""
        return (sum(len(idx) for _, idx in self.parts), self.parts[0][0].X.shape[1])

    def __matmul__(self, v):
        v64 = np.asarray(v, dtype=np.float64)
        out = []
        for r, idx in self.parts:
            z = np.asarray(r.X @ v, dtype=np.float64).ravel()[idx]
            out.append(z if r.shift is None else z - float(r.shift @ v64))
        return np.concatenate(out)

    @property
    def T(self):
        """The transpose, as an object with @."""
        return _Transposed(self)

    def subset(self, rows):
        """Some rows (ascending positions in the stacked order)."""
        rows = np.asarray(rows)
        offsets = np.cumsum([0] + [len(idx) for _, idx in self.parts])
        out = []
        for (r, idx), lo, hi in zip(self.parts, offsets[:-1], offsets[1:]):
            sel = rows[(rows >= lo) & (rows < hi)] - lo
            if len(sel):
                out.append((r, idx[sel]))
        return Rows(out)

    def weighted_sums(self, weights, squares=True):
        """sum_i W[i, j] * z_i and (squares) sum_i W[i, j] * z_i**2 for every column j of the
        weights W (n x m): two float64 arrays p x m (one pass over each dataset's matrix)."""
        W = np.asarray(weights, dtype=np.float64)
        W = W[:, None] if W.ndim == 1 else W
        p, m = self.shape[1], W.shape[1]
        s1, s2 = np.zeros((p, m)), np.zeros((p, m))
        start = 0
        for r, idx in self.parts:
            wg = W[start:start + len(idx)]
            start += len(idx)
            full = np.zeros((r.X.shape[0], m))
            full[idx] = wg                      # row indices of a part are unique
            xs = np.asarray(r.X.T @ full, dtype=np.float64)
            s1 += xs
            if squares:
                s2 += np.asarray(r.squared().T @ full)
            if r.shift is not None:
                sh, total = r.shift[:, None], wg.sum(axis=0)[None, :]
                s1 -= total * sh
                if squares:
                    s2 += -2 * sh * xs + total * sh * sh
        if np.ndim(weights) == 1:
            return s1[:, 0], s2[:, 0]
        return s1, s2

    def columns(self, cols):
        """Dense float64 z[:, cols]."""
        blocks = []
        for r, idx in self.parts:
            Z = r.X[:, cols][idx].toarray().astype(np.float64)
            if r.shift is not None:
                Z -= r.shift[cols]
            blocks.append(Z)
        return np.vstack(blocks)


@dataclass
class _Transposed:
    """z' of some Rows: `rows.T @ r` (p,) without forming z."""
    rows: Rows

    def __matmul__(self, r):
        r = np.asarray(r, dtype=np.float64)
        p = self.rows.shape[1]
        out, start = np.zeros(p), 0
        for rep, idx in self.rows.parts:
            part = r[start:start + len(idx)]
            start += len(idx)
            full = np.zeros(rep.X.shape[0])
            full[idx] = part
            out += np.asarray(rep.X.T @ full, dtype=np.float64).ravel()
            if rep.shift is not None:
                out -= rep.shift * part.sum()
        return out


@dataclass
class RepData:
    """A dataset in a representation: scaled rows, an optional shift vector and the arrays
    that define the transform (its portable form)."""
    X: sp.csr_matrix
    shift: np.ndarray | None = None
    arrays: dict = field(default_factory=dict)
    _squared: sp.csr_matrix | None = field(default=None, repr=False)

    def squared(self):
        """X with every value squared (float32, sharing X's index arrays; made once)."""
        if self._squared is None:
            self._squared = sp.csr_matrix((self.X.data ** 2, self.X.indices, self.X.indptr),
                                          shape=self.X.shape)
        return self._squared


def stack(rep, parts):
    """Rows of [(dataset name, row indices)] in a representation ({name: RepData})."""
    return Rows([(rep[n], np.asarray(idx)) for n, idx in parts])


# --------------------------------------------------------------------------------------------
# Representations
# --------------------------------------------------------------------------------------------
def _scale_rows(X, factor):
    """diag(factor) @ X, CSR float32."""
    return sp.csr_matrix(sp.diags(factor.astype(np.float32)) @ X, dtype=np.float32)


def rep_raw(datasets, ctx):
    """The activations as loaded."""
    return {n: RepData(d.X) for n, d in datasets.items()}


def rep_rownorm(datasets, ctx):
    """Each row divided by its Euclidean norm (all-zero rows stay zero): length-invariant."""
    out = {}
    for n, d in datasets.items():
        norm = np.sqrt(np.asarray(d.X.multiply(d.X).sum(axis=1), dtype=np.float64).ravel())
        out[n] = RepData(_scale_rows(d.X, np.divide(1.0, norm, out=np.zeros_like(norm),
                                                    where=norm > 0)))
    return out


def rep_srcstd(datasets, ctx):
    """Each dataset standardized with its own feature means and standard deviations over all of
    its rows (held-out rows included, unlabelled: transductive); constant features keep scale 1."""
    out = {}
    for n, d in datasets.items():
        X = d.X
        mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
        sq = np.asarray(X.multiply(X).mean(axis=0), dtype=np.float64).ravel()
        sd = np.sqrt(np.maximum(sq - mean ** 2, 0.0))
        sd[sd <= 1e-12 * np.maximum(1.0, np.abs(mean))] = 1.0
        Xs = sp.csr_matrix(X @ sp.diags((1.0 / sd).astype(np.float32)), dtype=np.float32)
        out[n] = RepData(Xs, mean / sd, {"mean": mean, "sd": sd})
    return out


def rep_mean(datasets, ctx):
    """Mean-pooled activations from <stem>_mean_activations.npy next to each max-pooled file;
    None when a file is missing (the arm is skipped with one note)."""
    out = {}
    for n, d in datasets.items():
        path = mean_path(d)
        if not path.is_file():
            return None
        X, _ = data.load_activations(path, ctx.feature_ids)
        if X.shape != d.X.shape:
            raise InputError(f"{path}: shape {X.shape}, but {d.files['activations'].name} has "
                             f"{d.X.shape}")
        out[n] = RepData(X)
    return out


def mean_path(d):
    """The mean-pooled file of a dataset."""
    return d.files["activations"].with_name(d.spec.stem + MEAN_SUFFIX)


@dataclass(frozen=True)
class Representation:
    """A registered representation."""
    build: object              # (datasets, ctx) -> {name: RepData} or None (not available)
    transductive: bool
    sees: str


REPRESENTATIONS = {
    "raw": Representation(rep_raw, False, "the activations as loaded"),
    "rownorm": Representation(rep_rownorm, False, "each row / its L2 norm"),
    "srcstd": Representation(rep_srcstd, True, "each dataset standardized with its own "
                             "statistics, held-out rows included (unlabelled)"),
    "mean": Representation(rep_mean, False, "mean-pooled activations (<stem>" + MEAN_SUFFIX
                           + ")"),
}


# --------------------------------------------------------------------------------------------
# Families: fit(train, cfg) -> Linear
# --------------------------------------------------------------------------------------------
@dataclass
class Train:
    """What a family sees: the training mix in its representation (rows: Rows), labels, loss
    weights (mean 1) and the reference's CV folds [(train, validation)] within the mix."""
    rows: Rows
    y: np.ndarray
    weight: np.ndarray
    folds: list

    def subset(self, idx):
        """The mix restricted to some of its rows (no folds)."""
        return Train(self.rows.subset(idx), self.y[idx], self.weight[idx], [])


@dataclass
class Linear:
    """A fitted probe: score = z @ w + b in its representation; record: what the fit chose."""
    w: np.ndarray
    b: float
    record: dict = field(default_factory=dict)

    def score(self, rows):
        """Float64 scores of rows (Rows)."""
        return np.asarray(rows @ self.w, dtype=np.float64).ravel() + self.b

    def arrays(self):
        """The portable form: plain arrays."""
        return {"w": np.asarray(self.w, dtype=np.float64), "b": np.array([self.b])}


def class_moments(train, subsets=None, squares=True):
    """Per class c in (0, 1): weighted mean and (squares) variance of every feature of z over
    each subset of the mix's rows (default: all rows); arrays p x len(subsets)."""
    n = len(train.y)
    subsets = [np.arange(n)] if subsets is None else subsets
    W = np.zeros((n, 2 * len(subsets)))
    for j, rows in enumerate(subsets):
        for c in (0, 1):
            W[rows, 2 * j + c] = np.where(train.y[rows] == c, train.weight[rows], 0.0)
    total = W.sum(axis=0)
    s1, s2 = train.rows.weighted_sums(W, squares)
    mean = s1 / total
    var = np.maximum(s2 / total - mean ** 2, 0.0) if squares else None
    return {c: (mean[:, c::2], None if var is None else var[:, c::2]) for c in (0, 1)}


def fit_massmean(train, cfg):
    """Mass-mean probe: w = mean(AF) - mean(not AF) (weighted), threshold at the midpoint of the
    two class means: score = (z - (m1 + m0) / 2) . (m1 - m0), in squared representation units."""
    mom = class_moments(train, squares=False)
    m0, m1 = mom[0][0][:, 0], mom[1][0][:, 0]
    w = m1 - m0
    return Linear(w, float(-np.dot(w, (m1 + m0) / 2)))


def rank_features(train, subsets=None):
    """Per subset of the mix's rows (default: all): features by |mean(AF) - mean(not AF)| /
    pooled SD (descending; constant features last, ties by index)."""
    mom = class_moments(train, subsets)
    diff = np.abs(mom[1][0] - mom[0][0])
    sd = np.sqrt((mom[1][1] + mom[0][1]) / 2)
    score = np.divide(diff, sd, out=np.zeros_like(diff), where=sd > 0)
    return [np.argsort(-score[:, j], kind="stable") for j in range(score.shape[1])]


def _lr_dense(Z, y, weight, cfg):
    """The reference's LR (standardized, C = --C) on dense columns Z: (w, b, record) with w in
    Z's units."""
    mean = Z.mean(axis=0)
    scale = Z.std(axis=0)
    scale[scale == 0] = 1.0
    with threadpool_limits(1):          # small dense products: BLAS threads only cost here
        w, b, n_iter, converged = probe.lbfgs_logistic(Z.astype(np.float32), y, mean, scale,
                                                       cfg.C, sample_weight=weight,
                                                       max_iter=cfg.max_iter, tol=cfg.tol)
    return w / scale, b - float(np.dot(mean / scale, w)), {"n_iter": n_iter,
                                                            "converged": converged}


def fit_ksparse(train, cfg):
    """k-sparse probe: the reference's LR on the top-k features by normalized mean difference;
    k from K_GRID by mean CV AUROC on the reference's folds (ranking redone on each fold's
    training rows; ties to the smaller k). One pass over the data ranks every fold."""
    n, p = len(train.y), train.rows.shape[1]
    grid = sorted({min(k, p) for k in K_GRID})
    orders = rank_features(train, [tr for tr, _ in train.folds] + [np.arange(n)])
    tops = [o[:grid[-1]] for o in orders]
    union = np.unique(np.concatenate(tops))
    Z = train.rows.columns(union)
    cv = {k: [] for k in grid}
    for (tr, va), top in zip(train.folds, tops):
        for k in grid:
            cols = np.searchsorted(union, np.sort(top[:k]))
            w, b, _ = _lr_dense(Z[np.ix_(tr, cols)], train.y[tr], train.weight[tr], cfg)
            cv[k].append(_auroc(train.y[va], Z[np.ix_(va, cols)] @ w + b))
    means = {k: float(np.mean(v)) for k, v in cv.items()}
    best = max(grid, key=lambda k: (means[k], -k))
    chosen = np.sort(tops[-1][:best])
    w, b, rec = _lr_dense(Z[:, np.searchsorted(union, chosen)], train.y, train.weight, cfg)
    full = np.zeros(p)
    full[chosen] = w
    rec.update(k=int(best), cv_auroc={str(k): v for k, v in means.items()},
               features=chosen.tolist())
    return Linear(full, b, rec)


def fit_lr(train, cfg):
    """The reference's LR (StandardScaler + L2 LR at --C) on z, one fit (representations with
    a shift; the others are fitted in lockstep batches, see fit_lr_batch)."""
    s1, s2 = train.rows.weighted_sums(np.ones(len(train.y)))
    n = len(train.y)
    mean = s1 / n
    scale = np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0))
    scale[scale == 0] = 1.0
    w, b, n_iter, converged = probe.lbfgs_logistic(train.rows, train.y, mean, scale, cfg.C,
                                                   sample_weight=train.weight,
                                                   max_iter=cfg.max_iter, tol=cfg.tol)
    return Linear(w / scale, b - float(np.dot(mean / scale, w)),
                  {"C": cfg.C, "n_iter": n_iter, "converged": converged})


def fit_lrcv(train, cfg):
    """LR with C from C_GRID by mean CV AUROC on the reference's folds (ties to smaller C)."""
    cv = {}
    for C in C_GRID:
        c = replace(cfg, C=C)
        cv[C] = float(np.mean([_auroc(train.y[va], fit_lr(train.subset(tr), c)
                                      .score(train.rows.subset(va)))
                               for tr, va in train.folds]))
    best = max(C_GRID, key=lambda C: (cv[C], -C))
    out = fit_lr(train, replace(cfg, C=best))
    out.record.update(C=best, cv_auroc={f"{C:g}": v for C, v in cv.items()})
    return out


def _auroc(y, s):
    """AUROC of scores s for labels y."""
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(y, s))


@dataclass(frozen=True)
class Family:
    """A registered probe family: fit(train, cfg) -> Linear; batch (optional): fit every plan
    of a representation without a shift at once (lockstep)."""
    fit: object
    sees: str
    batch: object = None


# --------------------------------------------------------------------------------------------
# Batched LR fits (representations without a shift): the lockstep path via execution.execute
# --------------------------------------------------------------------------------------------
def _plans_for(jobs, rep_datasets, grid):
    """Per job and C: the reference's plan on the representation's datasets at that C."""
    out = []
    for job in jobs:
        for C in grid:
            plan = probe.plan_step(job.plan.step, rep_datasets, job.splits,
                                   replace(job.plan.cfg, C=C), job.plan.seed)
            out.append(plan)
    return out


def _linear_of(fitted):
    """Linear of an execution result (pipe, converged, n_iter, scores, solver)."""
    pipe, converged, n_iter = fitted[0][:3]
    w, b = probe.linear_form(pipe)
    return Linear(w, b, {"n_iter": int(n_iter), "converged": bool(converged),
                         "cv_converged": bool(all(f[1] for f in fitted[1:]))})


def batch_lr(jobs, rep_datasets, execute):
    """lr on a representation without a shift: every step's plan in one lockstep batch
    (execute: plans -> execution results, e.g. execution.execute)."""
    C = jobs[0].plan.cfg.C
    fitted = execute(_plans_for(jobs, rep_datasets, [C]))
    out = []
    for f in fitted:
        lin = _linear_of(f)
        lin.record["C"] = C
        out.append(lin)
    return out


def batch_lrcv(jobs, rep_datasets, execute):
    """lrcv on a representation without a shift: every (step, C) plan in one lockstep batch; C
    chosen per step by the mean AUROC of the plan's CV folds."""
    plans = _plans_for(jobs, rep_datasets, C_GRID)
    fitted = execute(plans)
    out = []
    for j in range(len(jobs)):
        cv = {}
        for i, C in enumerate(C_GRID):
            plan, f = plans[j * len(C_GRID) + i], fitted[j * len(C_GRID) + i]
            cv[C] = float(np.mean(probe.cv_summary(plan, f)["fold_auroc"]))
        best = max(C_GRID, key=lambda C: (cv[C], -C))
        lin = _linear_of(fitted[j * len(C_GRID) + C_GRID.index(best)])
        lin.record.update(C=best, cv_auroc={f"{C:g}": v for C, v in cv.items()})
        out.append(lin)
    return out


FAMILIES = {
    "lr": Family(fit_lr, "StandardScaler + L2 logistic regression at --C (the reference)",
                 batch_lr),
    "massmean": Family(fit_massmean, "class means of the training mix (weighted)"),
    "ksparse": Family(fit_ksparse, "features ranked on the training mix; LR on the top k, k in "
                      f"{'/'.join(map(str, K_GRID))} by CV on the training mix"),
    "lrcv": Family(fit_lrcv, "LR with C in " + "/".join(f"{c:g}" for c in C_GRID)
                   + " by CV AUROC on the training mix", batch_lrcv),
}


# --------------------------------------------------------------------------------------------
# Method names
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    """An arm: a family on a representation."""
    name: str
    family: str
    representation: str

    @property
    def transductive(self):
        """True when the representation uses unlabelled eval rows."""
        return REPRESENTATIONS[self.representation].transductive


def parse_method(text):
    """'massmean+rownorm' -> Method; InputError naming the flag on an unknown name."""
    fam, _, rep = text.partition("+")
    rep = rep or "raw"
    if fam not in FAMILIES or rep not in REPRESENTATIONS:
        raise InputError(f"--methods: unknown method {text!r} (families: "
                         f"{', '.join(FAMILIES)}; representations: "
                         f"{', '.join(REPRESENTATIONS)}; e.g. massmean+rownorm)")
    name = fam if rep == "raw" else f"{fam}+{rep}"
    return Method(name, fam, rep)


def parse_methods(names):
    """The arms of --methods, in order, without duplicates; the reference must be one."""
    out = list({m.name: m for m in map(parse_method, names)}.values())
    if REFERENCE not in [m.name for m in out]:
        raise InputError(f"--methods: the reference '{REFERENCE}' must be in the list (every "
                         "arm is compared with it)")
    return out
