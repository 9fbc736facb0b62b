"""Reading input files without trusting them: small files and JSON with size and parsing limits,
.npy headers checked before any data is read (never unpickled), and dense activation files
converted chunk by chunk into CSR float32 (no dense or float64 copy is ever held).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os

import numpy as np
import scipy.sparse as sp

from common import MAX_SIDECAR_BYTES
from sweeplib.base import InputError, open_regular

LOAD_CHUNK_ROWS = 256
MAX_HEADER_BYTES = 100_000       # numpy's own default limit is 10,000
LOAD_CHUNK_BYTES = 64 << 20      # at most this much of a wide dense file read at once


def read_small_file(path, what, limit=MAX_SIDECAR_BYTES):
    """Bytes of a regular file of at most `limit` bytes (InputError otherwise)."""
    with open_regular(path, what) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"{path}: {what} is over the {limit} byte limit")
    return data


def parse_json(data, path, what):
    """A JSON document from bytes; InputError for bad UTF-8, syntax, nesting or numbers."""
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        raise InputError(f"{path}: malformed {what} (the key {str(e)[:80]!r} appears twice "
                         "in one object: which one holds the truth?)") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: malformed {what} (not UTF-8: {e.reason})") from None
    except RecursionError:
        raise InputError(f"{path}: malformed {what} (nested too deeply)") from None
    except ValueError as e:
        raise InputError(f"{path}: malformed {what} ({str(e)[:200]})") from None


class HashingReader:
    """A binary file read once, front to back, with the sha256 and byte count of exactly the
    bytes read: the fingerprint a run records is the one of the bytes it used."""

    def __init__(self, f):
        self.f = f
        self.hash = hashlib.sha256()
        self.n = 0

    def read(self, n=-1):
        """Read and hash."""
        data = self.f.read(n)
        self.hash.update(data)
        self.n += len(data)
        return data

    def fingerprint(self):
        """{'bytes', 'sha256'} of everything read so far (data.fingerprint's form)."""
        return {"bytes": self.n, "sha256": self.hash.hexdigest()}


class _DuplicateKey(ValueError):
    """A JSON object with a key given twice."""


def _unique_keys(pairs):
    """A JSON object's dict; _DuplicateKey for a key given twice (the last would win)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def _parse_header(f, path, size):
    """(shape, fortran_order, dtype, data offset) of a .npy read from f (at its start) whose
    size is `size`, validated; never unpickles, never echoes the file's bytes."""
    fmt = np.lib.format
    try:
        if f.read(6) != fmt.MAGIC_PREFIX:
            raise InputError(f"{path}: not a readable .npy file (no .npy magic string at its "
                             "start)")
        version = tuple(f.read(2))
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise InputError(f"{path}: not a readable .npy file (unknown .npy version)")
        head = f.read(2 if version == (1, 0) else 4)
        if len(head) < 2:
            raise EOFError("header cut short")
        length = int.from_bytes(head, "little")
        if length > MAX_HEADER_BYTES:
            raise InputError(f"{path}: not a readable .npy file (a {length} byte header)")
        text = f.read(length)
        if len(text) != length:
            raise EOFError("header cut short")
        shape, fortran, dtype = _header_fields(text, version)
        offset = 6 + 2 + len(head) + length
    except (ValueError, EOFError, SyntaxError, TypeError, RecursionError) as e:
        raise InputError(f"{path}: not a readable .npy file (empty, truncated or corrupt: "
                         f"{type(e).__name__})") from None
    if dtype.hasobject:
        raise InputError(f"{path}: holds an object array; refusing to unpickle it")
    need = offset + math.prod(shape) * dtype.itemsize
    if size < need:
        raise InputError(f"{path}: truncated .npy file ({size} bytes, header promises {need})")
    if size > need:
        raise InputError(f"{path}: {size - need} bytes after the array data ({size} bytes, "
                         f"header promises {need}); corrupt or not one array: refusing it")
    return shape, fortran, dtype, offset


def _header_fields(text, version):
    """(shape, fortran_order, dtype) of a .npy header's dictionary text (ValueError if bad)."""
    import ast
    d = ast.literal_eval(text.decode("latin1" if version < (3, 0) else "utf-8"))
    if not (isinstance(d, dict) and set(d) == {"descr", "fortran_order", "shape"}
            and isinstance(d["shape"], tuple) and isinstance(d["fortran_order"], bool)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                    for n in d["shape"])):
        raise ValueError("bad header")
    return d["shape"], d["fortran_order"], np.lib.format.descr_to_dtype(d["descr"])


def _npy_header(path):
    """(shape, fortran_order, dtype, data offset) of a .npy file, validated (header only)."""
    with open_regular(path, ".npy file") as f:
        return _parse_header(f, path, os.fstat(f.fileno()).st_size)


def npy_from_bytes(data, path):
    """The array in the bytes of a .npy file (a copy in memory: nothing is mapped)."""
    shape, fortran, dtype, offset = _parse_header(io.BytesIO(data), path, len(data))
    flat = np.frombuffer(data, dtype=dtype, offset=offset, count=math.prod(shape))
    return flat.reshape(shape, order="F" if fortran else "C")


def activation_shape(path):
    """(rows, features) of an activations file, validated as 2-D numeric (header only)."""
    shape, _, dtype, _ = _npy_header(path)
    if len(shape) != 2:
        raise InputError(f"{path}: activations must be 2-D (samples x features), got shape "
                         f"{shape}")
    if dtype.kind not in "fiub":
        raise InputError(f"{path}: activations must be numeric, got dtype {dtype}")
    if shape[1] == 0:
        raise InputError(f"{path}: activations have no features (shape {shape})")
    return shape


def _dense_to_csr_parts(block):
    """(data, column indices, per-row counts) of a dense float32 block's non-zeros."""
    flat = block.ravel()
    lin = np.flatnonzero(flat)
    return flat[lin], (lin % block.shape[1]).astype(np.int32), np.count_nonzero(block, axis=1)


def _blocks(f, path, shape, fortran, dtype):
    """Dense blocks of a 2-D .npy read from f (after its header) with plain reads, never
    through a memory map (a file truncated under a map kills the process with SIGBUS): row
    blocks, or for a Fortran-ordered file column blocks as rows of the transpose."""
    n_rows, n_cols = (shape[1], shape[0]) if fortran else shape
    step = max(1, LOAD_CHUNK_ROWS * shape[1] // max(1, shape[0])) if fortran else LOAD_CHUNK_ROWS
    row_bytes = n_cols * dtype.itemsize
    step = max(1, min(step, LOAD_CHUNK_BYTES // max(1, row_bytes)))   # a wide file: fewer rows
    for start in range(0, n_rows, step):
        k = min(step, n_rows - start)
        buf = f.read(k * row_bytes)
        if len(buf) != k * row_bytes:
            raise InputError(f"{path}: the file changed while it was read (it ends inside "
                             f"{'column' if fortran else 'row'} {start}); run again")
        yield start, np.frombuffer(buf, dtype=dtype).reshape(k, n_cols)


def _check_finite(block, raw, path, start, fortran):
    """InputError naming the first non-finite (or beyond-float32) value of a block."""
    if np.isfinite(block.sum(dtype=np.float64)) or np.isfinite(block).all():
        return
    r, c = np.argwhere(~np.isfinite(block))[0]
    what = (f"value {raw[r, c]:.3g} outside the float32 range" if np.isfinite(raw[r, c])
            else f"non-finite value {block[r, c]}")
    row, feature = (c, start + r) if fortran else (start + r, c)
    raise InputError(f"{path}: {what} at row {row}, feature {feature}")


def dense_to_csr(path, shape):
    """(CSR float32 matrix, negative-value count, fingerprint of exactly the bytes read) of a
    dense activations file of the expected shape, read once from front to back."""
    data, indices, counts, n_neg = [], [], [], 0
    with open_regular(path, "activations file") as raw_f:
        f = HashingReader(raw_f)
        size = os.fstat(raw_f.fileno()).st_size
        got, fortran, dtype, _ = _parse_header(f, path, size)
        if tuple(got) != tuple(shape):
            raise InputError(f"{path}: the file changed while it was read (shape {got}, "
                             f"{tuple(shape)} a moment before); run again")
        for start, block in _blocks(f, path, shape, fortran, dtype):
            raw = block
            with np.errstate(over="ignore"):
                block = np.ascontiguousarray(block, dtype=np.float32)
            _check_finite(block, raw, path, start, fortran)
            n_neg += int(np.count_nonzero(block < 0))
            d, i, k = _dense_to_csr_parts(block)
            data.append(d)
            indices.append(i)
            counts.append(k)
        if f.read(1):
            raise InputError(f"{path}: the file changed while it was read (it grew); run again")
    n_rows, n_cols = (shape[1], shape[0]) if fortran else shape
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts), out=indptr[1:])
    if indptr[-1] < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    X = sp.csr_matrix((np.concatenate(data), np.concatenate(indices), indptr),
                      shape=(n_rows, n_cols))
    if fortran:
        X = X.T.tocsr()
        X.sort_indices()
    return X, n_neg, f.fingerprint()
