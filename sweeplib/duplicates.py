"""Duplicate detection and the leakage audit: exact / near-duplicate rows of sparse matrices.

Everything but the audit's log lines is a pure function over numpy arrays or scipy.sparse
matrices: no file I/O, and no random choice. The audit (leakage_audit) counts, for every
training part and every eval set, the eval rows with an exact or near (cosine >= threshold)
duplicate among the training rows, and the duplicates inside each eval set.
"""

from __future__ import annotations

import hashlib

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

__all__ = [
    "row_hashes",
    "duplicate_counts",
    "duplicate_groups",
    "support_candidates",
    "leakage_audit",
    "audit_warnings",
]


# ---------------------------------------------------------------------------
# Exact and near duplicates
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
# Values of one densified block (64 MB of float32): 1,024 rows up to 16,384 features, fewer
# rows of a wider matrix, so the audit's memory never grows with width x rows.
DENSE_BLOCK_CELLS = 1024 * 16384
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
    if method == "dense":        # densified rows per side: at most DENSE_BLOCK_CELLS values
        chunk = max(1, min(chunk, DENSE_BLOCK_CELLS // max(1, A.shape[1])))
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

    Returns {"exact", "near", "near_rows" (indices of the counted rows of B), "max_cosine",
    "n_rows", "n_reference"}; with
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

    best, near_pairs, (ci, cj, cv) = _best_cosines(A, invA, B, invB, threshold, chunk, method,
                                                   same)
    exact_rows, exact_pairs, extra_near = _exact_rows(A, B, (ci, cj, cv), threshold, same)
    near_pairs += extra_near
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
        "near_rows": np.flatnonzero(near_rows),
        "max_cosine": float(finite.max()) if finite.size else float("nan"),
        "n_rows": int(nB),
        "n_reference": int(nA),
    }
    if same:
        result["exact_pairs"] = exact_pairs
        result["near_pairs"] = near_pairs
    return result


def _exact_rows(A, B, candidates, threshold, same):
    """(rows of B with an exact duplicate, exact pairs, near pairs to add) from the candidate
    pairs of _best_cosines, each checked for exact equality (identical pairs always count as
    near ones)."""
    nA, nB = A.shape[0], B.shape[0]
    ci, cj, cv = candidates
    exact_rows = np.zeros(nB, dtype=bool)
    if not ci:
        return exact_rows, 0, 0
    i, j, v = np.concatenate(ci), np.concatenate(cj), np.concatenate(cv)
    if same:
        eq = _rows_equal([B], np.array([0]), i, j)
    else:
        eq = _rows_equal([A, B], np.array([0, nA]), i, j + nA)
    i, j, v = i[eq], j[eq], v[eq]
    exact_rows[j] = True
    if not same:
        return exact_rows, 0, 0
    exact_rows[i] = True
    return exact_rows, int(i.size), int(np.count_nonzero(v < threshold))


def _best_cosines(A, invA, B, invB, threshold, chunk, method, same):
    """(best cosine of each row of B with A, near pairs counted in B x B when same, candidate
    exact pairs ([rows of A], [rows of B], [cosines])) from the cosine blocks."""
    nA, nB = A.shape[0], B.shape[0]
    best = np.full(nB, -np.inf, dtype=np.float32)
    near_pairs = 0
    ci, cj, cv = [], [], []
    if not (nA and nB):
        return best, near_pairs, (ci, cj, cv)
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
        np.maximum(best[b0 : b0 + blk.shape[1]], blk.max(axis=0),
                   out=best[b0 : b0 + blk.shape[1]])
    return best, near_pairs, (ci, cj, cv)


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


# ---------------------------------------------------------------------------
# The leakage audit
# ---------------------------------------------------------------------------
def _squared_mass(A):
    """(element-wise squares of A as CSR, squared norm of each row)."""
    sq = A.multiply(A).tocsr()
    return sq, np.asarray(sq.sum(axis=1)).ravel()


def support_candidates(A, B, threshold, mass=None):
    """Rows of A that can reach cosine >= threshold with some row of B (exact bound).

    cos(a, b) <= |a restricted to supp(b)| / |a|, and supp(b) lies in the union of B's
    supports, so rows with less than threshold^2 of their squared mass there are skipped.
    mass: _squared_mass(A), when already computed.
    """
    sq, total = _squared_mass(A) if mass is None else mass
    support = np.zeros(A.shape[1], dtype=np.float32)
    support[B.indices] = 1.0                       # the union of B's supports
    on = np.asarray(sq @ support).ravel()
    return np.flatnonzero((total == 0) | (on >= threshold ** 2 * total * (1 - 1e-6)))


def _take(X, rows):
    """Rows of a CSR matrix; X itself (no copy) when that is all of them in order."""
    rows = np.asarray(rows)
    if len(rows) == X.shape[0] and np.array_equal(rows, np.arange(X.shape[0])):
        return X
    return X[rows]


def leakage_audit(datasets, splits, threshold, log=print):
    """Exact / near duplicate counts between every training part and every eval set."""
    train_parts = {n: _take(datasets[n].X, s.train) for n, s in splits.items() if len(s.train)}
    evals = {n: _take(datasets[n].X, s.eval) for n, s in splits.items() if len(s.eval)}
    pairs = []
    for tn, A in train_parts.items():
        mass = _squared_mass(A)
        for en, B in evals.items():
            rows = support_candidates(A, B, threshold, mass)
            c = (duplicate_counts(_take(A, rows), B, threshold=threshold) if len(rows)
                 else {"exact": 0, "near": 0, "near_rows": []})
            pairs.append({"train": tn, "eval": en, "exact": int(c["exact"]), "near": int(c["near"]),
                          "n_eval": int(B.shape[0]),
                          "near_rows": [int(i) for i in c["near_rows"]]})
    within = {}                         # duplicates inside an eval set shrink its effective n
    for n, B in evals.items():
        c = duplicate_counts(B, B, threshold=threshold, same=True)
        within[n] = {"exact": int(c["exact"]), "near": int(c["near"]), "n": int(B.shape[0])}
    found = [p for p in pairs if p["exact"] or p["near"]]
    audit = {"threshold": threshold, "pairs": pairs, "within": within,
             "n_pairs_with_duplicates": len(found)}
    for line in audit_warnings(audit):
        log(line)
    return audit


def audit_warnings(audit):
    """The warning lines of an audit: one per training part / eval set pair with duplicates."""
    return [f"warning: leakage audit: {p['exact']} exact / {p['near']} near duplicates of "
            f"training part '{p['train']}' in eval set '{p['eval']}' (of {p['n_eval']})"
            for p in audit["pairs"] if p["exact"] or p["near"]]
