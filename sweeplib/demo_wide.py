"""The demo cache at widths beyond the reference SAE's, and its sparse form (demo.py uses it).

Realistic density (--density real, the default): a wider SAE splits each feature of a
narrower one into finer features, so a row keeps about as many active features as at the
reference width (REAL_DATA.md: ~3,700 / ~850 at 16,384 and 262,144 features alike). The
generator draws each dataset at the reference width and gives every reference feature a
seeded group of W / 16,384 wide features; in each row, the active value of a reference
feature lands on one member of its group, drawn from a skewed distribution (a few members
common, most rare, as SAE feature frequencies are) by a generator seeded from the row's
support (its set of active features), so a near-copy of a row keeps its copy's columns. --density
proportional widens the layout itself (active features grow with the width).

Sparse output (--sparse): `<stem>_activations.npz` written with scipy.sparse.save_npz (CSR
float32); the dense form of a wide cache is written row block by row block, never held whole.
"""
from __future__ import annotations

import hashlib

import numpy as np
import scipy.sparse as sp

from sweeplib.base import InputError, atomic_write

DENSITIES = ("real", "proportional")
WRITE_ROWS = 256                      # rows densified at once when writing a dense .npy
SPLIT_SKEW = 3.0                      # member m of a group of G fires with probability
                                      # ((m+1)/G)^(1/3) - (m/G)^(1/3): 40 % on the first of 16


def check_request(variant, sparse, density, n_features, ref):
    """InputError ('--flag: problem') for a density or combination the generator cannot do."""
    if density not in DENSITIES:
        raise InputError(f"--density: must be one of {DENSITIES}, got {density!r}")
    if variant is not None and (sparse or n_features > ref):
        raise InputError(f"--truth/--mean-pooled: not with --sparse or above {ref} features "
                         "(dense reference-width caches only)")


def marker(sparse, density, n_features, ref):
    """What the demo marker adds for these settings (nothing for a dense reference-width
    cache, whose marker stays as it was)."""
    return {**({"sparse": True} if sparse else {}),
            **({"density": density} if n_features > ref else {})}


def layout_width(n_features, density, ref):
    """The width the feature layout is drawn at."""
    return n_features if density == "proportional" else min(n_features, ref)


def _groups(n_features, n_ref, rng):
    """(first column of each reference feature's group in a seeded permutation, the
    permutation): group j = perm[start[j]:start[j + 1]]."""
    perm = rng.permutation(n_features)
    start = (np.arange(n_ref + 1, dtype=np.int64) * n_features) // n_ref
    return start, perm


def widen(X, n_features, rng_for_row, rng):
    """CSR (rows, n_features) float32 from dense or CSR reference-width activations X: each
    value moves to one column of its feature's group, chosen per row from the row's support
    (rng_for_row(64-bit key) -> Generator)."""
    X = sp.csr_matrix(X, dtype=np.float32)
    n_ref = X.shape[1]
    if n_features == n_ref:
        return X
    start, perm = _groups(n_features, n_ref, rng)
    size = np.diff(start)
    cols = np.empty_like(X.indices, dtype=np.int64)
    for r in range(X.shape[0]):
        lo, hi = X.indptr[r], X.indptr[r + 1]
        feats = X.indices[lo:hi]
        key = hashlib.sha256(feats.astype(np.int32).tobytes()).digest()[:8]
        u = rng_for_row(int.from_bytes(key, "little")).random(hi - lo)
        cols[lo:hi] = perm[start[feats] + (u ** SPLIT_SKEW * size[feats]).astype(np.int64)]
    out = sp.csr_matrix((X.data, cols.astype(np.int32), X.indptr.copy()),
                        shape=(X.shape[0], n_features))
    out.sort_indices()
    return out


def save_activations(path_stem, X, sparse):
    """Write <stem>_activations.npz (save_npz, CSR float32) or .npy (dense float32, written
    in row blocks); returns the path."""
    if sparse:
        path = path_stem.with_name(path_stem.name + "_activations.npz")
        atomic_write(path, lambda f: sp.save_npz(f, sp.csr_matrix(X, dtype=np.float32)))
        return path
    path = path_stem.with_name(path_stem.name + "_activations.npy")
    if not sp.issparse(X):
        atomic_write(path, lambda f: np.save(f, X, allow_pickle=False))
        return path

    def write(f):
        """Header, then the rows block by block."""
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                  "fortran_order": False, "shape": X.shape}
        np.lib.format.write_array_header_1_0(f, header)
        for r in range(0, X.shape[0], WRITE_ROWS):
            f.write(np.ascontiguousarray(X[r:r + WRITE_ROWS].toarray()).tobytes())
    atomic_write(path, write)
    return path


def row_stats(X):
    """(mean active features per row, mean non-zero value) of dense or CSR activations."""
    nnz = X.getnnz(axis=1) if sp.issparse(X) else np.count_nonzero(X, axis=1)
    total = float(X.sum(dtype=np.float64))
    return float(nnz.mean()), total / max(1, int(nnz.sum()))


def column_means(X):
    """float64 mean of each column (dense or CSR)."""
    if sp.issparse(X):
        return np.asarray(X.sum(axis=0, dtype=np.float64)).ravel() / X.shape[0]
    return X.mean(axis=0, dtype=np.float64)


def near_duplicate_pairs(X, threshold):
    """Row pairs with cosine similarity >= threshold (dense or CSR; rows x rows products)."""
    if not sp.issparse(X):
        Xn = X.astype(np.float64)
        norms = np.linalg.norm(Xn, axis=1, keepdims=True)
        Xn /= np.where(norms > 0, norms, 1.0)
        cos = Xn @ Xn.T
        return int(np.count_nonzero(np.triu(cos >= threshold, k=1)))
    Xn = sp.csr_matrix(X, dtype=np.float64)
    norms = np.sqrt(np.asarray(Xn.multiply(Xn).sum(axis=1)).ravel())
    Xn = sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ Xn
    cos = (Xn @ Xn.T).toarray()
    return int(np.count_nonzero(np.triu(cos >= threshold, k=1)))
