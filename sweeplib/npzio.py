"""Sparse activation files (`<stem>_activations.npz`, written by scipy.sparse.save_npz: CSR,
CSC or COO) read without trusting them and without ever densifying: each member's .npy header
is checked before its data are read (an object array is refused, never unpickled), the
structure is validated, and the matrix becomes the canonical CSR float32 form the dense path
produces (sorted column indices, duplicates summed, no stored zeros, int32 indices), so both
forms of one cache give the same matrix bit for bit.

    X, n_negative, fp = read_sparse(path)     # fp: size and sha256 of exactly the bytes parsed
"""
from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import scipy.sparse as sp

from sweeplib.base import InputError, open_regular

FORMATS = {"csr": ("data", "indices", "indptr"), "csc": ("data", "indices", "indptr"),
           "coo": ("data", "row", "col")}
INT32_MAX = np.iinfo(np.int32).max


class _Bad(Exception):
    """A damaged or unsupported archive (the message says why)."""


class _Refused(Exception):
    """A member that must never be read (the message says why)."""


def _member(zf, name, want=None):
    """One array of the archive, header checked first (never unpickled); None when absent."""
    entry = f"{name}.npy"
    if entry not in zf.namelist():
        return None
    fmt = np.lib.format
    with zf.open(entry) as f:
        version = fmt.read_magic(f)
        read_header = (fmt.read_array_header_1_0 if version == (1, 0)
                       else fmt.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        if dtype.hasobject:
            raise _Refused(f"member {name!r} holds an object array; refusing to unpickle it")
        if want is not None and len(shape) != want:
            raise _Bad(f"member {name!r} has shape {shape}, expected {want}-D")
        arr = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
        view = memoryview(arr.reshape(-1, order="A")).cast("B") if arr.size else b""
        if arr.size and f.readinto(view) != arr.nbytes:
            raise _Bad(f"member {name!r} is truncated")
    return arr


def _check_csx(arr, major, minor, what):
    """Validate compressed-sparse arrays (data, indices, indptr) of `major` rows/columns."""
    data, indices, indptr = arr
    if len(indptr) != major + 1:
        raise _Bad(f"{what}: indptr has {len(indptr)} entries for {major} {what[-4:]}")
    if len(indptr) and (indptr[0] != 0 or np.any(np.diff(indptr) < 0)):
        raise _Bad(f"{what}: indptr must start at 0 and never decrease")
    if indptr[-1] != len(indices) or len(indices) != len(data):
        raise _Bad(f"{what}: {len(data)} values, {len(indices)} indices, indptr ends at "
                   f"{indptr[-1]}")
    if len(indices) and (indices.min() < 0 or indices.max() >= minor):
        raise _Bad(f"{what}: an index is out of range [0, {minor})")


def _matrix(zf):
    """The archive's matrix as CSR (original dtype), structure validated."""
    raw = _member(zf, "format", 0)
    if raw is None:
        raise _Bad("no 'format' entry: not a scipy.sparse.save_npz file")
    kind = raw.item().decode("ascii", "replace") if raw.dtype.kind == "S" else str(raw.item())
    if kind not in FORMATS:
        raise _Bad(f"sparse format {kind!r} is not supported (save it as CSR, CSC or COO)")
    shape = _member(zf, "shape", 1)
    if shape is None or len(shape) != 2 or shape.dtype.kind not in "iu" or np.any(shape < 0):
        raise _Bad("its 'shape' entry must be two non-negative integers (samples x features)")
    n_rows, n_cols = (int(v) for v in shape)
    arr = [_member(zf, name, 1) for name in FORMATS[kind]]
    coords = _member(zf, "coords", 2) if kind == "coo" and arr[1] is None else None
    if coords is not None and len(coords) == 2:
        arr[1:] = list(coords)
    missing = [n for n, a in zip(FORMATS[kind], arr) if a is None]
    if missing:
        raise _Bad(f"{kind.upper()} matrix without its {missing[0]!r} entry")
    if any(a.dtype.kind not in "iu" for a in arr[1:]) or arr[0].dtype.kind not in "fiub":
        raise _Bad(f"index arrays must be integers and values numeric (values: "
                   f"{arr[0].dtype})")
    if kind == "coo":
        data, row, col = arr
        if not len(row) == len(col) == len(data):
            raise _Bad(f"COO matrix: {len(data)} values, {len(row)} rows, {len(col)} columns")
        for idx, bound in ((row, n_rows), (col, n_cols)):
            if len(idx) and (idx.min() < 0 or idx.max() >= bound):
                raise _Bad(f"COO matrix: an index is out of range [0, {bound})")
        return sp.coo_matrix((data, (row, col)), shape=(n_rows, n_cols)).tocsr()
    major, minor = (n_rows, n_cols) if kind == "csr" else (n_cols, n_rows)
    _check_csx(arr, major, minor, f"{kind.upper()} matrix of {major} "
                                  + ("rows" if kind == "csr" else "cols"))
    cls = sp.csr_matrix if kind == "csr" else sp.csc_matrix
    return cls(tuple(arr), shape=(n_rows, n_cols)).tocsr()


def _open_zip(path, source):
    """A zipfile over `source` (path or bytes); InputError for anything that is not one."""
    try:
        return zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise InputError(f"{path}: not a readable sparse .npz file (empty, truncated or "
                         f"corrupt: {e or type(e).__name__})") from None


def _parse(path, zf, fn):
    """fn(zf) with a damaged archive's errors as one InputError line naming the file."""
    try:
        return fn(zf)
    except _Refused as e:
        raise InputError(f"{path}: {e}") from None
    except _Bad as e:
        raise InputError(f"{path}: not a usable sparse activations file ({e})") from None
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError,
            NotImplementedError) as e:
        raise InputError(f"{path}: not a readable sparse .npz file (corrupt: "
                         f"{str(e)[:200] or type(e).__name__})") from None


def sparse_shape(path):
    """(rows, features) of a sparse activations file from its 'shape' entry only."""
    with open_regular(path, ".npz file") as f:
        zf = _open_zip(path, f)
        with zf:
            shape = _parse(path, zf, lambda z: _member(z, "shape", 1))
    if shape is None or len(shape) != 2 or shape.dtype.kind not in "iu" or np.any(shape < 0):
        raise InputError(f"{path}: not a usable sparse activations file (no 'shape' entry of "
                         "two non-negative integers: not a scipy.sparse.save_npz file?)")
    return int(shape[0]), int(shape[1])


def _canonical_float32(path, X):
    """CSR float32 with the dense path's form and checks (non-finite or beyond float32:
    InputError at the first such row and feature); returns (X, negative-value count)."""
    X.sum_duplicates()                            # sorts indices too
    with np.errstate(over="ignore"):
        data = X.data.astype(np.float32, copy=False)
    bad = np.flatnonzero(~np.isfinite(data))
    if len(bad):
        pos = int(bad[0])
        row = int(np.searchsorted(X.indptr, pos, side="right") - 1)
        raw = X.data[pos]
        what = (f"value {raw:.3g} outside the float32 range" if np.isfinite(raw)
                else f"non-finite value {data[pos]}")
        raise InputError(f"{path}: {what} at row {row}, feature {int(X.indices[pos])}")
    X = sp.csr_matrix((data, X.indices, X.indptr), shape=X.shape, copy=False)
    if not data.all():
        X.eliminate_zeros()                       # in place, order kept
    X.indices = X.indices.astype(np.int32 if X.shape[1] <= INT32_MAX else np.int64, copy=False)
    if X.nnz < INT32_MAX:
        X.indptr = X.indptr.astype(np.int32, copy=False)
    X.has_sorted_indices = True
    return X, int(np.count_nonzero(X.data < 0))


def read_sparse(path):
    """(CSR float32 activations, negative-value count, fingerprint) of a sparse .npz: the
    file is read once, its bytes hashed and parsed (the fingerprint is of exactly what was
    parsed)."""
    with open_regular(path, ".npz file") as f:
        raw = f.read()
    fp = {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    zf = _open_zip(path, raw)
    with zf:
        X = _parse(path, zf, _matrix)
    del raw
    X, n_neg = _canonical_float32(path, X)
    return X, n_neg, fp
