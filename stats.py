"""Statistics for probe evaluation: bootstrap CIs, paired deltas and a leakage audit.

Everything here is a pure function over numpy arrays or scipy.sparse matrices:
no file I/O, no printing, and every random choice is driven by an explicit seed
through ``numpy.random.default_rng``.

Conventions
-----------
* ``score`` is a decision function in log-odds; probability >= 0.5 <=> score >= 0.
* ``label`` is 0/1 with 1 = AF (the positive class).
* Bootstrap resamples are index arrays of shape ``(B, n)``.  Passing the same
  index array to several steps of a sweep gives a *paired* bootstrap, which is
  what :func:`paired_delta` expects.
* AUROC is computed from average ranks (Mann-Whitney U), so ties count one half,
  exactly like ``sklearn.metrics.roc_auc_score``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

__all__ = [
    "stratified_bootstrap_indices",
    "auroc",
    "auroc_batch",
    "rate_batch",
    "percentile_ci",
    "bootstrap_metrics",
    "point_metrics",
    "summarize",
    "paired_delta",
    "inflection_step",
    "gap_ci",
    "row_hashes",
    "duplicate_counts",
    "duplicate_groups",
    "grouped_stratified_split",
]


# ---------------------------------------------------------------------------
# 1. Bootstrap confidence intervals
# ---------------------------------------------------------------------------


def stratified_bootstrap_indices(strata, n_boot=1000, seed=0) -> np.ndarray:
    """Return (n_boot, n) int indices resampling with replacement within each stratum, column positions fixed."""
    strata = np.asarray(strata)
    if strata.ndim != 1:
        raise ValueError("strata must be 1-D")
    n = strata.shape[0]
    rng = np.random.default_rng(seed)
    out = np.empty((int(n_boot), n), dtype=np.intp)
    # Loop over strata (a handful), never over resamples.
    for s in np.unique(strata):
        pos = np.flatnonzero(strata == s)
        draws = rng.integers(0, pos.size, size=(int(n_boot), pos.size))
        out[:, pos] = pos[draws]
    return out


def _binary_labels(labels) -> np.ndarray:
    """Return labels as a boolean array (True = positive), rejecting values other than 0/1."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels
    ok = (labels == 0) | (labels == 1)
    if not np.all(ok):
        raise ValueError("labels must be 0/1 (or boolean)")
    return labels == 1


def _positive_rank_sums(scores_2d, pos_2d) -> np.ndarray:
    """Return, per row, the sum of average ranks (1-based, ties averaged) of the positive entries."""
    B, n = scores_2d.shape
    if n == 0:
        return np.zeros(B)
    # Radix sort for small integers, quicksort otherwise; ties are averaged below so stability is irrelevant.
    kind = "stable" if np.issubdtype(scores_2d.dtype, np.integer) else "quicksort"
    order = np.argsort(scores_2d, axis=1, kind=kind)
    xs = np.take_along_axis(scores_2d, order, axis=1)
    ps = np.take_along_axis(pos_2d, order, axis=1)
    new = np.ones((B, n), dtype=bool)
    np.not_equal(xs[:, 1:], xs[:, :-1], out=new[:, 1:])
    flat = new.ravel()
    starts = np.flatnonzero(flat)
    counts = np.diff(np.append(starts, flat.size))
    start_rank = starts % n + 1.0
    avg = start_rank + (counts - 1) / 2.0
    gid = np.cumsum(flat) - 1
    ranks_sorted = avg[gid].reshape(B, n)
    return np.einsum("ij,ij->i", ranks_sorted, ps.astype(np.float64))


def _u_from_counts(codes_2d, pos_2d, K) -> np.ndarray:
    """Mann-Whitney U per row for small non-negative integer scores, by counting instead of sorting."""
    B, n = codes_2d.shape
    # One bincount over keys (row, label, code): counts[b, 0] = negatives, counts[b, 1] = positives.
    key = np.arange(B, dtype=np.intp)[:, None] * (2 * K) + codes_2d + K * pos_2d
    counts = np.bincount(key.ravel(), minlength=B * 2 * K).reshape(B, 2, K).astype(np.float64)
    N, P = counts[:, 0], counts[:, 1]
    below = np.cumsum(N, axis=1) - N  # negatives strictly below each code
    return np.einsum("ij,ij->i", P, below + 0.5 * N)


def auroc(scores, labels) -> float:
    """Rank-based AUROC (ties count 1/2), equal to sklearn's roc_auc_score; ValueError if a class is missing."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    pos = _binary_labels(labels).ravel()
    if scores.shape != pos.shape:
        raise ValueError("scores and labels must have the same length")
    n1 = int(pos.sum())
    n0 = pos.size - n1
    if n1 == 0 or n0 == 0:
        raise ValueError("AUROC needs both classes present")
    r = _positive_rank_sums(scores[None, :], pos[None, :])[0]
    return float((r - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def auroc_batch(scores_2d, labels_2d) -> np.ndarray:
    """Row-wise rank-based AUROC of (B, n) scores vs (B, n) or (n,) 0/1 labels; nan where a class is missing."""
    scores_2d = np.asarray(scores_2d)
    if scores_2d.ndim != 2:
        raise ValueError("scores_2d must be 2-D")
    if not (np.issubdtype(scores_2d.dtype, np.integer) or scores_2d.dtype == np.float64):
        scores_2d = scores_2d.astype(np.float64)
    pos = np.broadcast_to(_binary_labels(labels_2d), scores_2d.shape)
    B, n = scores_2d.shape
    n1 = pos.sum(axis=1).astype(np.float64)
    n0 = n - n1
    lo = hi = 0
    if np.issubdtype(scores_2d.dtype, np.integer) and scores_2d.size:
        lo, hi = int(scores_2d.min()), int(scores_2d.max())
    if np.issubdtype(scores_2d.dtype, np.integer) and scores_2d.size and hi - lo < 4 * n:
        u = _u_from_counts(scores_2d - lo, pos, hi - lo + 1)
    else:
        u = _positive_rank_sums(scores_2d, pos) - n1 * (n1 + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        out = u / (n1 * n0)
    out[(n1 == 0) | (n0 == 0)] = np.nan
    return out


def rate_batch(flags_2d) -> np.ndarray:
    """Row-wise mean of a boolean (B, n) array; nan for rows of an array with zero columns."""
    flags_2d = np.asarray(flags_2d, dtype=bool)
    if flags_2d.ndim != 2:
        raise ValueError("flags_2d must be 2-D")
    if flags_2d.shape[1] == 0:
        return np.full(flags_2d.shape[0], np.nan)
    return np.count_nonzero(flags_2d, axis=1) / flags_2d.shape[1]


def percentile_ci(samples, level=0.95) -> tuple[float, float]:
    """Equal-tailed percentile interval of the non-nan samples; (nan, nan) if none are left."""
    if not 0.0 < level < 1.0:
        raise ValueError("level must be in (0, 1)")
    x = np.asarray(samples, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        return (float("nan"), float("nan"))
    alpha = (1.0 - level) / 2.0
    lo, hi = np.percentile(x, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return (float(lo), float(hi))


def _order_codes(x) -> np.ndarray:
    """Integer codes preserving order and ties of a 1-D array (smallest integer dtype, so row sorts use radix sort)."""
    _, inv = np.unique(x, return_inverse=True)
    dtype = np.int16 if x.size < np.iinfo(np.int16).max else np.int32
    return inv.reshape(-1).astype(dtype)


def bootstrap_metrics(
    score,
    label,
    *,
    threshold_05=0.0,
    thresholds=None,
    idx=None,
    n_boot=1000,
    seed=0,
    reference_neg_scores=None,
    ref_idx=None,
) -> dict:
    """Bootstrap sample arrays (B,) of AUROC, accuracy, detection rate, recall/FPR at fixed thresholds and AUROC vs reference negatives."""
    score = np.asarray(score, dtype=np.float64).ravel()
    pos = _binary_labels(label).ravel()
    n = score.size
    if pos.size != n:
        raise ValueError("score and label must have the same length")
    if idx is None:
        idx = stratified_bootstrap_indices(pos.astype(np.int8), n_boot=n_boot, seed=seed)
    idx = np.asarray(idx)
    if idx.ndim != 2 or idx.shape[1] != n:
        raise ValueError(f"idx must have shape (B, {n}), got {idx.shape}")
    if not np.array_equal(pos[idx], np.broadcast_to(pos, idx.shape)):
        raise ValueError("idx must keep each column's label (resample within label strata)")
    B = idx.shape[0]
    n1 = int(pos.sum())
    n0 = n - n1

    S = score[idx]
    S_pos = S[:, pos]
    S_neg = S[:, ~pos]
    out = {}
    if n1 and n0:
        # AUROC depends only on order, so resample integer order codes (radix-sortable).
        out["auroc"] = auroc_batch(_order_codes(score)[idx], pos)
    out["accuracy"] = rate_batch((S >= threshold_05) == pos)
    if n1:
        out["detection_rate"] = rate_batch(S_pos >= threshold_05)
    for key, t in (thresholds or {}).items():
        if n1:
            out[f"recall_at_fpr_{key}"] = rate_batch(S_pos >= t)
        if n0:
            out[f"eval_fpr_{key}"] = rate_batch(S_neg >= t)
    if reference_neg_scores is not None:
        ref = np.asarray(reference_neg_scores, dtype=np.float64).ravel()
        m = ref.size
        if ref_idx is None:
            # Independent stream from the one that built idx for the same seed.
            ref_idx = np.random.default_rng([int(seed), 1]).integers(0, m, size=(B, m))
        ref_idx = np.asarray(ref_idx)
        if ref_idx.shape != (B, m):
            raise ValueError(f"ref_idx must have shape ({B}, {m}), got {ref_idx.shape}")
        if n1 and m:
            codes = _order_codes(np.concatenate([score[pos], ref]))
            af_rank = np.searchsorted(np.flatnonzero(pos), idx[:, pos])  # AF position within score[pos]
            combined = np.concatenate([codes[:n1][af_rank], codes[n1:][ref_idx]], axis=1)
            lab = np.concatenate([np.ones(n1, dtype=bool), np.zeros(m, dtype=bool)])
            out["auroc_vs_reference_negatives"] = auroc_batch(combined, lab)
    return out


def point_metrics(score, label, *, threshold_05=0.0, thresholds=None, reference_neg_scores=None) -> dict:
    """Point estimates (floats) of the metrics of bootstrap_metrics on the original, unresampled sample."""
    score = np.asarray(score, dtype=np.float64).ravel()
    ref_idx = None
    if reference_neg_scores is not None:
        ref_idx = np.arange(np.asarray(reference_neg_scores).size)[None, :]
    boot = bootstrap_metrics(
        score,
        label,
        threshold_05=threshold_05,
        thresholds=thresholds,
        idx=np.arange(score.size)[None, :],
        reference_neg_scores=reference_neg_scores,
        ref_idx=ref_idx,
    )
    return {k: float(v[0]) for k, v in boot.items()}


def summarize(boot: dict, level=0.95) -> dict:
    """Map each metric's bootstrap samples to its percentile interval [lo, hi]."""
    return {k: list(percentile_ci(v, level)) for k, v in boot.items()}


# ---------------------------------------------------------------------------
# 2. Paired step-to-step deltas and generalization gap
# ---------------------------------------------------------------------------


def _one_sided_p(diff, point) -> float:
    """Fraction of bootstrap differences on the far side of zero from the point difference (1.0 when point is 0)."""
    if diff.size == 0 or np.isnan(point):
        return float("nan")
    if point > 0:
        return float(np.mean(diff <= 0))
    if point < 0:
        return float(np.mean(diff >= 0))
    return 1.0


def paired_delta(boot_a, boot_b, point_a, point_b, level=0.95, *, higher_is_better=True) -> dict:
    """Paired-bootstrap change from step a to step b: delta, percentile CI, one-sided p and a verdict.

    ``boot_a``/``boot_b`` must be computed on the SAME resample indices; rows where
    either is nan are dropped.  ``p_value`` is the fraction of bootstrap deltas on
    the other side of zero from the observed delta (<= 0 if delta > 0, >= 0 if
    delta < 0) and 1.0 when delta == 0; 0.0 means "below 1/B".  The verdict is
    "improved"/"degraded" only when the CI excludes 0 and agrees in sign with the
    observed delta; with ``higher_is_better=False`` (e.g. FPR) the two words swap.
    """
    a = np.asarray(boot_a, dtype=np.float64).ravel()
    b = np.asarray(boot_b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError("paired bootstrap arrays must have the same length")
    d = b - a
    d = d[~np.isnan(d)]
    delta = float(point_b) - float(point_a)
    lo, hi = percentile_ci(d, level)
    verdict = "no clear change"
    if lo > 0 and delta > 0:
        verdict = "improved" if higher_is_better else "degraded"
    elif hi < 0 and delta < 0:
        verdict = "degraded" if higher_is_better else "improved"
    return {"delta": delta, "ci": [lo, hi], "p_value": _one_sided_p(d, delta), "verdict": verdict}


def inflection_step(deltas, steps):
    """Step reached by the largest significant gain: deltas[i] is the change INTO steps[i+1]; None if no "improved" delta."""
    steps = list(steps)
    if len(deltas) != len(steps) - 1:
        raise ValueError("need len(deltas) == len(steps) - 1 (deltas[i]: steps[i] -> steps[i+1])")
    best, best_gain = None, None
    for i, d in enumerate(deltas):
        if d is None or d.get("verdict") != "improved":
            continue
        gain = abs(d["delta"])  # "improved" already encodes the direction
        if best_gain is None or gain > best_gain:
            best, best_gain = steps[i + 1], gain
    return best


def gap_ci(in_dist_boot, ood_boot, point_in, point_ood, level=0.95) -> dict:
    """Generalization gap (in-distribution minus OOD) with a CI from the elementwise difference of independent resamples.

    The two eval sets are different samples, so the bootstrap arrays must come from
    independent resampling (different seeds); the row-wise difference of two
    independent bootstrap distributions is the bootstrap distribution of the
    difference.  ``p_value`` is one-sided in the direction of the observed gap.
    """
    a = np.asarray(in_dist_boot, dtype=np.float64).ravel()
    b = np.asarray(ood_boot, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError("bootstrap arrays must have the same length B")
    d = a - b
    d = d[~np.isnan(d)]
    gap = float(point_in) - float(point_ood)
    lo, hi = percentile_ci(d, level)
    return {
        "gap": gap,
        "ci": [lo, hi],
        "p_value": _one_sided_p(d, gap),
        "excludes_zero": bool(lo > 0 or hi < 0),
    }


# ---------------------------------------------------------------------------
# 3. Leakage audit: exact and near duplicates
# ---------------------------------------------------------------------------


def _as_csr(X):
    """Return X as CSR (dense 2-D input is converted; CSR input is returned as is, never modified)."""
    if sp.issparse(X):
        return X.tocsr()
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError("expected a 2-D array or sparse matrix")
    return sp.csr_matrix(X)


def _canonical_csr(X):
    """CSR with sorted unique column indices and no stored zeros (copies only when needed)."""
    X = _as_csr(X)
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    if X.nnz and np.count_nonzero(X.data) != X.nnz:
        X = X.copy()
        X.eliminate_zeros()
    return X


def row_hashes(X) -> np.ndarray:
    """Stable 128-bit hash per row (dtype 'S16'): truncated SHA-256 of the row's sorted column indices and float32 values.

    Equal rows get equal hashes regardless of storage details (index order,
    duplicate entries, explicit zeros, float32 vs float64 storage of the same
    values).  Different rows share a hash only by collision, or when float64
    values differ below float32 precision; callers needing exactness verify
    matches (as the functions below do).
    """
    X = _canonical_csr(X)
    ind = X.indices.astype(np.int64 if X.shape[1] > np.iinfo(np.int32).max else np.int32, copy=False)
    val = X.data.astype(np.float32, copy=False)
    isz, vsz = ind.itemsize, val.itemsize
    ind_b = memoryview(np.ascontiguousarray(ind).view(np.uint8))
    val_b = memoryview(np.ascontiguousarray(val).view(np.uint8))
    indptr = X.indptr.tolist()
    out = np.empty(X.shape[0], dtype="S16")
    sha256 = hashlib.sha256
    # One hash per row (a loop over rows, not pairs); both parts have the same
    # length, so the concatenation is unambiguous.
    for i in range(X.shape[0]):
        lo, hi = indptr[i], indptr[i + 1]
        h = sha256(ind_b[lo * isz : hi * isz])
        h.update(val_b[lo * vsz : hi * vsz])
        out[i] = h.digest()[:16]
    return out


def _take_rows(mats, offsets, rows):
    """Rows (global indices over the vertical concatenation of mats) as one CSR matrix, in the given order."""
    rows = np.asarray(rows)
    which = np.searchsorted(offsets, rows, side="right") - 1
    parts, pos = [], []
    for k, M in enumerate(mats):
        sel = np.flatnonzero(which == k)
        if sel.size:
            parts.append(M[rows[sel] - offsets[k]])
            pos.append(sel)
    stacked = sp.vstack(parts, format="csr")
    perm = np.empty(rows.size, dtype=np.intp)
    perm[np.concatenate(pos)] = np.arange(rows.size)
    return stacked[perm]


def _rows_equal(mats, offsets, i, j, chunk=1024) -> np.ndarray:
    """Elementwise exact equality of global rows i[k] and j[k] of the stacked mats (sparse subtraction, chunked)."""
    i, j = np.asarray(i), np.asarray(j)
    eq = np.ones(i.size, dtype=bool)
    for s in range(0, i.size, chunk):
        a = _take_rows(mats, offsets, i[s : s + chunk]).astype(np.float64)
        b = _take_rows(mats, offsets, j[s : s + chunk]).astype(np.float64)
        diff = (a - b).tocsr()
        diff.eliminate_zeros()
        eq[s : s + chunk] = np.diff(diff.indptr) == 0
    return eq


def _relabel_first_seen(lab) -> np.ndarray:
    """Relabel integer labels to 0..k-1 in order of first appearance."""
    _, first, inv = np.unique(lab, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.intp)
    rank[np.argsort(first)] = np.arange(first.size)
    return rank[inv.reshape(-1)]


def _exact_group_ids(mats, hashes=None) -> np.ndarray:
    """Group id per row of the stacked mats; equal ids <=> exactly equal rows (hash matches are verified)."""
    mats = [_as_csr(M) for M in mats]
    if len({M.shape[1] for M in mats}) > 1:
        raise ValueError("all matrices must have the same number of columns")
    offsets = np.cumsum([0] + [M.shape[0] for M in mats])
    h = np.concatenate([row_hashes(M) for M in mats]) if hashes is None else np.asarray(hashes)
    gid = np.full(h.size, -1, dtype=np.intp)
    remaining = np.arange(h.size)
    next_id = 0
    # Each round assigns every row equal to its hash-run representative; rows left
    # over (hash collisions) are regrouped among themselves in the next round.
    while remaining.size:
        hk = h[remaining]
        order = np.argsort(hk, kind="stable")
        r = remaining[order]
        hs = hk[order]
        start = np.ones(r.size, dtype=bool)
        start[1:] = hs[1:] != hs[:-1]
        run = np.cumsum(start) - 1
        rep = r[start][run]
        eq = np.ones(r.size, dtype=bool)
        check = np.flatnonzero(~start)
        if check.size:
            eq[check] = _rows_equal(mats, offsets, rep[check], r[check])
        gid[r[eq]] = next_id + run[eq]
        next_id += int(run[-1]) + 1
        remaining = r[~eq]
    return _relabel_first_seen(gid)


def _row_norms(X) -> np.ndarray:
    """float64 L2 norm of each CSR row."""
    sq = np.square(X.data, dtype=np.float64)
    counts = np.diff(X.indptr)
    out = np.zeros(X.shape[0])
    nonempty = counts > 0
    if sq.size:
        out[nonempty] = np.add.reduceat(sq, X.indptr[:-1][nonempty])
    return np.sqrt(out)


def _inv_norms(X) -> np.ndarray:
    """float32 reciprocal row norms, 0 for all-zero rows."""
    norms = _row_norms(X)
    inv = np.zeros(norms.size, dtype=np.float32)
    nz = norms > 0
    inv[nz] = 1.0 / norms[nz]
    return inv


def _scale_rows(X, inv):
    """float32 CSR copy of X with row i multiplied by inv[i]."""
    data = X.data.astype(np.float32) * np.repeat(inv, np.diff(X.indptr))
    return sp.csr_matrix((data, X.indices, X.indptr), shape=X.shape)


# Cost of one multiply-add of scipy's sparse x sparse product relative to one of
# the dense float32 BLAS product (densifying included), measured on 2 cores.
_SPARSE_VS_DENSE_COST = 250.0
# Cost of densifying one matrix element, in dense multiply-adds.
_DENSIFY_COST = 60.0
# Cosine above which a pair is checked for exact equality (float32 rounding of an
# identical pair stays far above this).
_EXACT_CANDIDATE_COS = 1.0 - 1e-3


def _choose_method(A, B, method) -> str:
    """Pick "dense" (densified chunks + BLAS) or "sparse" (sparse x sparse) from a cost model."""
    if method in ("dense", "sparse"):
        return method
    if method != "auto":
        raise ValueError("method must be 'auto', 'dense' or 'sparse'")
    F = A.shape[1]
    ca = np.bincount(A.indices, minlength=F).astype(np.float64)
    cb = ca if B is A else np.bincount(B.indices, minlength=F).astype(np.float64)
    sparse_cost = float(ca @ cb) * _SPARSE_VS_DENSE_COST
    dense_cost = float(A.shape[0]) * B.shape[0] * F + _DENSIFY_COST * (A.shape[0] + B.shape[0]) * F
    return "sparse" if sparse_cost < dense_cost else "dense"


def _row_slice(X, a0, a1):
    """Rows a0:a1 of a CSR matrix as a CSR sharing X's data and indices (no copy)."""
    lo, hi = X.indptr[a0], X.indptr[a1]
    return sp.csr_matrix(
        (X.data[lo:hi], X.indices[lo:hi], X.indptr[a0 : a1 + 1] - lo), shape=(a1 - a0, X.shape[1]), copy=False
    )


def _densify(X, a0, a1, buf, inv):
    """Rows a0:a1 of CSR X as a dense float32 array (written into buf), each row scaled by inv."""
    out = buf[: a1 - a0]
    out.fill(0.0)
    _row_slice(X, a0, a1).toarray(out=out)
    out *= inv[a0:a1, None]
    return out


def _cosine_blocks(A, invA, B, invB, chunk, method, same=False):
    """Yield (a0, b0, block): float32 cosines of A[a0:a0+c] x B[b0:b0+c], at most chunk rows per side densified at once."""
    nA, nB = A.shape[0], B.shape[0]
    if method == "sparse":
        An = _scale_rows(A, invA)
        Bn = An if same else _scale_rows(B, invB)
    else:
        F = A.shape[1]
        bufB = np.empty((min(chunk, nB), F), dtype=np.float32)
        bufA = np.empty((min(chunk, nA), F), dtype=np.float32)
        if A.dtype != np.float32:
            A = A.astype(np.float32)
        if B.dtype != np.float32:
            B = A if same else B.astype(np.float32)
    for b0 in range(0, nB, chunk):
        b1 = min(b0 + chunk, nB)
        if method == "dense":
            Bd = _densify(B, b0, b1, bufB, invB)
        else:
            BnT = _row_slice(Bn, b0, b1).T.tocsc()
        for a0 in range(0, nA, chunk):
            a1 = min(a0 + chunk, nA)
            if method == "dense":
                if same and a0 == b0:
                    # A distinct copy: OpenBLAS is very slow on X @ X.T with 2 threads.
                    Ad = bufA[: a1 - a0]
                    np.copyto(Ad, Bd)
                else:
                    Ad = _densify(A, a0, a1, bufA, invA)
                # Larger operand on the left (much faster multi-threaded BLAS).
                blk = Ad @ Bd.T if Ad.shape[0] >= Bd.shape[0] else (Bd @ Ad.T).T
            else:
                blk = (_row_slice(An, a0, a1) @ BnT).toarray()
            yield a0, b0, blk


def duplicate_counts(A, B, threshold=0.99, same=False, chunk=1024, *, method="auto") -> dict:
    """Count rows of B with an exact / near (cosine >= threshold, includes exact) duplicate among rows of A.

    Returns {"exact", "near", "max_cosine", "n_rows", "n_reference"}; with
    ``same=True`` (A is ignored and B is compared with itself, self-pairs
    excluded) "exact"/"near" count rows having another such row, plus
    "exact_pairs" and "near_pairs" (unordered pairs).  Cosines use
    L2-normalised float32 rows in blocks of at most ``chunk`` rows per side
    (dense BLAS on densified chunks, or sparse x sparse; picked by a cost model
    when method="auto").  Pairs with cosine >= 1 - 1e-3 are checked for exact
    equality; all-zero rows are exact duplicates of each other (cosine counted
    as 1) and have cosine 0 with any other row.  "max_cosine" is nan when there
    is no pair.
    """
    B = _as_csr(B)
    A = B if same else _as_csr(A)
    if A.shape[1] != B.shape[1]:
        raise ValueError("A and B must have the same number of columns")
    nA, nB = A.shape[0], B.shape[0]
    invB = _inv_norms(B)
    invA = invB if same else _inv_norms(A)

    best = np.full(nB, -np.inf, dtype=np.float32)
    near_pairs = 0
    ci, cj, cv = [], [], []
    if nA and nB:
        m = _choose_method(A, B, method)
        for a0, b0, blk in _cosine_blocks(A, invA, B, invB, int(chunk), m, same):
            np.minimum(blk, 1.0, out=blk)
            if same:
                ia = np.arange(a0, a0 + blk.shape[0])[:, None]
                ib = np.arange(b0, b0 + blk.shape[1])[None, :]
                blk[ia == ib] = -np.inf  # ignore self-pairs
                upper = ia < ib
                near_pairs += int(np.count_nonzero((blk >= threshold) & upper))
                cand = (blk >= _EXACT_CANDIDATE_COS) & upper
            else:
                cand = blk >= _EXACT_CANDIDATE_COS
            if cand.any():
                pa, pb = np.nonzero(cand)
                ci.append(pa + a0)
                cj.append(pb + b0)
                cv.append(blk[pa, pb])
            np.maximum(best[b0 : b0 + blk.shape[1]], blk.max(axis=0), out=best[b0 : b0 + blk.shape[1]])

    exact_rows = np.zeros(nB, dtype=bool)
    exact_pairs = 0
    if ci:
        i, j, v = np.concatenate(ci), np.concatenate(cj), np.concatenate(cv)
        if same:
            eq = _rows_equal([B], np.array([0]), i, j)
        else:
            eq = _rows_equal([A, B], np.array([0, nA]), i, j + nA)
        i, j, v = i[eq], j[eq], v[eq]
        exact_rows[j] = True
        if same:
            exact_rows[i] = True
            exact_pairs += int(i.size)
            near_pairs += int(np.count_nonzero(v < threshold))  # identical pairs always count as near
    # All-zero rows: identical to each other, cosine 0 with anything else.
    zB = invB == 0
    if same:
        z = int(zB.sum())
        if z >= 2:
            exact_rows |= zB
            exact_pairs += z * (z - 1) // 2
            if threshold > 0:
                near_pairs += z * (z - 1) // 2
    elif (invA == 0).any():
        exact_rows |= zB
    best[exact_rows] = 1.0
    near_rows = (best >= threshold) | exact_rows
    finite = best[np.isfinite(best)]
    result = {
        "exact": int(exact_rows.sum()),
        "near": int(near_rows.sum()),
        "max_cosine": float(finite.max()) if finite.size else float("nan"),
        "n_rows": int(nB),
        "n_reference": int(nA),
    }
    if same:
        result["exact_pairs"] = exact_pairs
        result["near_pairs"] = near_pairs
    return result


def duplicate_groups(X, threshold=None, chunk=1024, *, method="auto") -> np.ndarray:
    """Group id per row (0..k-1, first-appearance order): exact duplicates, plus cosine >= threshold links if given (connected components)."""
    X = _as_csr(X)
    g = _exact_group_ids([X])
    n = X.shape[0]
    if threshold is None or n < 2:
        return g
    inv = _inv_norms(X)
    m = _choose_method(X, X, method)
    rows, cols = [np.arange(n)], [n + g]  # node n + k stands for exact group k
    for a0, b0, blk in _cosine_blocks(X, inv, X, inv, int(chunk), m, same=True):
        ia, ib = np.nonzero(blk >= threshold)
        ia, ib = ia + a0, ib + b0
        keep = ia < ib
        rows.append(ia[keep])
        cols.append(ib[keep])
    r, c = np.concatenate(rows), np.concatenate(cols)
    k = int(g.max()) + 1
    adj = sp.coo_matrix((np.ones(r.size, dtype=np.int8), (r, c)), shape=(n + k, n + k))
    _, lab = connected_components(adj, directed=False)
    return _relabel_first_seen(lab[:n])


def grouped_stratified_split(strata, groups, eval_fraction=0.2, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train_idx, eval_idx) with whole groups on one side and per-stratum eval share near eval_fraction.

    Groups are placed largest first (random order among equal sizes, from
    ``seed``); a group goes to eval when that lowers the total deviation
    sum_s |eval_s - eval_fraction * n_s|.  Afterwards every stratum touched by
    >= 2 groups is given >= 1 eval and >= 1 train sample by moving the group
    whose move costs least.  A group spanning several strata counts towards each.
    """
    strata = np.asarray(strata)
    groups = np.asarray(groups)
    if strata.shape != groups.shape or strata.ndim != 1:
        raise ValueError("strata and groups must be 1-D and of equal length")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError("eval_fraction must be in (0, 1)")
    n = strata.size
    if n == 0:
        return np.array([], dtype=np.intp), np.array([], dtype=np.intp)
    _, s_id = np.unique(strata, return_inverse=True)
    _, g_id = np.unique(groups, return_inverse=True)
    s_id, g_id = s_id.reshape(-1), g_id.reshape(-1)
    nS, nG = int(s_id.max()) + 1, int(g_id.max()) + 1
    # comp[g, s] = number of samples of group g in stratum s.
    comp = sp.csr_matrix((np.ones(n), (g_id, s_id)), shape=(nG, nS)).toarray()
    size = comp.sum(axis=1)
    target = eval_fraction * comp.sum(axis=0)

    rng = np.random.default_rng(seed)
    perm = rng.permutation(nG)
    order = perm[np.argsort(-size[perm], kind="stable")]
    in_eval = np.zeros(nG, dtype=bool)
    cur = np.zeros(nS)
    for gi in order:  # loop over groups (not resamples or pairs)
        c = comp[gi]
        if np.abs(cur + c - target).sum() < np.abs(cur - target).sum():
            in_eval[gi] = True
            cur += c

    touching = comp > 0
    n_groups_per_stratum = touching.sum(axis=0)
    for _ in range(3):  # a few passes: a cross-stratum move can disturb another stratum
        changed = False
        for s in np.flatnonzero(n_groups_per_stratum >= 2):
            ev = (comp[:, s] * in_eval).sum()
            tr = (comp[:, s] * ~in_eval).sum()
            if ev > 0 and tr > 0:
                continue
            want_eval = ev == 0
            cand = np.flatnonzero(touching[:, s] & (in_eval != want_eval))
            sign = 1.0 if want_eval else -1.0
            cost = np.abs(cur[None, :] + sign * comp[cand] - target[None, :]).sum(axis=1)
            # Tie-break by the seeded permutation for determinism.
            pri = np.empty(nG, dtype=np.intp)
            pri[perm] = np.arange(nG)
            gi = cand[np.lexsort((pri[cand], cost))[0]]
            in_eval[gi] = want_eval
            cur += sign * comp[gi]
            changed = True
        if not changed:
            break
    mask = in_eval[g_id]
    return np.flatnonzero(~mask), np.flatnonzero(mask)
