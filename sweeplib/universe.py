"""The universe: the rows every fit of a batch uses, stored once, and its batched products.

Rows of several datasets are stacked and stored as row chunks of X' (CSR of the transpose), so
that X.V (per chunk) and X'.R (per feature range) both split over threads; every column of V
or R is one fit's vector, and the products give each column the same bits as the fit's own
matrix would (lockstep.py, scaler_stats.py).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

CHUNKS_PER_THREAD = 4          # row chunks per thread (X.V tasks; memory while building)


class Universe:
    """Rows of several datasets, stacked, stored as row chunks of X' (CSR of the transpose)
    so that X.V (per chunk) and X'.R (per feature range) both split over threads.

    Each chunk is [I | X'_chunk] (p x (p + rows)): every feature's row starts with a 1 in
    column f, then its values at columns p + row. X.V then reads rows p: of the product (the
    first p rows are V itself); X'.R over a feature range goes chunk by chunk, each product
    taking the running sums of the chunks before as the first term of every feature's sum
    (0 + 1 * sum), so each feature's sum runs over all rows in order, as one product over
    the whole matrix would (a product of scipy starts at zero and cannot accumulate)."""

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
        self.chunks = list(self._map(lambda piece: _transpose(*piece, self.p), pieces))
        counts = np.zeros(self.p, dtype=np.int64)
        for _, _, XT in self.chunks:
            counts += np.diff(XT.indptr) - 1
        cum = np.concatenate([[0], np.cumsum(counts)])
        bounds = np.searchsorted(cum, np.linspace(0, cum[-1], self.threads + 1)[1:-1])
        self.feature_ranges = [(int(a), int(b)) for a, b in
                               zip(np.r_[0, bounds], np.r_[bounds, self.p]) if b > a]
        self.range_rows = {rng: [(start, stop, _rows(XT, *rng)) for start, stop, XT in self.chunks]
                           for rng in self.feature_ranges}

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
                Y[start:stop, :kc] = (_values(XT, dtype).T @ Vc)[self.p:]
        self._map(one, self.chunks)
        return Y

    def xtr(self, R, cover, data=None, dtype=np.float32):
        """X' @ R (p x k) for R over the universe rows (rows >= cover[i] of column i are 0);
        `data` maps a chunk's values to the values multiplied (default: themselves)."""
        k = R.shape[1]
        G = np.zeros((self.p, k), dtype=dtype)
        R = np.ascontiguousarray(R, dtype=dtype)

        def one(rng):
            """X' @ R for one feature range, chunk after chunk."""
            f0, f1 = rng
            out = np.zeros((f1 - f0, k), dtype=dtype)
            for start, stop, part in self.range_rows[rng]:
                kc = int(np.count_nonzero(cover > start))
                if not kc:
                    continue
                # rows f0:f1 of [I | X'] read the running sums there, rows p: the residuals
                rhs = np.empty((self.p + stop - start, kc), dtype=dtype)
                rhs[f0:f1] = out[:, :kc]
                rhs[self.p:] = R[start:stop, :kc]
                out[:, :kc] = _values(part, dtype, data) @ rhs
            G[f0:f1] = out
        self._map(one, self.feature_ranges)
        return G

    def column(self, j):
        """(universe rows, values) of feature j, rows ascending."""
        rows, vals = [], []
        for start, _, XT in self.chunks:
            a, b = XT.indptr[j] + 1, XT.indptr[j + 1]          # + 1: after the identity's 1
            rows.append(XT.indices[a:b].astype(np.int64) - self.p + start)
            vals.append(XT.data[a:b])
        return np.concatenate(rows), np.concatenate(vals)


def _transpose(A, idx, offset, p):
    """(first row, stop row, [I | rows idx of A transposed] as CSR, int32 indices)."""
    XT = A[idx].T.tocsr()
    XT.sort_indices()
    first = XT.indptr[:-1] + np.arange(p)              # where each feature's row starts
    data = np.empty(XT.nnz + p, dtype=XT.dtype)
    indices = np.empty(XT.nnz + p, dtype=np.int32)
    rest = np.ones(XT.nnz + p, dtype=bool)
    rest[first] = False
    data[first], indices[first] = 1, np.arange(p)
    data[rest], indices[rest] = XT.data, XT.indices + p
    indptr = (XT.indptr + np.arange(p + 1)).astype(np.int32)
    return offset, offset + len(idx), _csr(data, indices, indptr, (p, p + len(idx)))


def _csr(data, indices, indptr, shape):
    """A CSR matrix on these arrays, never a copy (scipy's constructor copies a slice that is
    small next to the array it views: the feature ranges here)."""
    A = sp.csr_matrix(shape, dtype=data.dtype)
    A.data, A.indices, A.indptr = data, indices, indptr
    return A


def _rows(A, f0, f1):
    """Rows f0:f1 of a CSR matrix, sharing its arrays."""
    a, b = A.indptr[f0], A.indptr[f1]
    return _csr(A.data[a:b], A.indices[a:b], A.indptr[f0:f1 + 1] - a, (f1 - f0, A.shape[1]))


def _values(A, dtype, data=None):
    """A chunk with its values mapped by `data` and cast to dtype (itself when nothing
    changes); the identity's entries stay 1."""
    if data is None and A.dtype == dtype:
        return A
    vals = np.array(A.data if data is None else data(A.data), dtype=dtype)
    vals[A.indptr[:-1]] = 1
    return _csr(vals, A.indices, A.indptr, A.shape)
