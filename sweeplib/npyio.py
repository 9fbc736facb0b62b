"""Reading input files without trusting them: small files and JSON with size and parsing limits,
.npy headers checked before any data is read (never unpickled), and dense activation files
converted chunk by chunk into CSR float32 (no dense or float64 copy is ever held).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from common import MAX_SIDECAR_BYTES
from sweeplib.base import InputError, open_regular

LOAD_CHUNK_ROWS = 256


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
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: malformed {what} (not UTF-8: {e.reason})") from None
    except RecursionError:
        raise InputError(f"{path}: malformed {what} (nested too deeply)") from None
    except ValueError as e:
        raise InputError(f"{path}: malformed {what} ({str(e)[:200]})") from None


def _npy_header(path):
    """(shape, fortran_order, dtype, data offset) of a .npy, validated; never unpickles."""
    fmt = np.lib.format
    f = open_regular(path, ".npy file")
    try:
        with f:
            version = fmt.read_magic(f)
            read_header = (fmt.read_array_header_1_0 if version == (1, 0)
                           else fmt.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except (ValueError, EOFError, OSError) as e:
        raise InputError(f"{path}: not a readable .npy file (empty, truncated or corrupt: "
                         f"{e or type(e).__name__})") from None
    if dtype.hasobject:
        raise InputError(f"{path}: holds an object array; refusing to unpickle it")
    need = offset + math.prod(shape) * dtype.itemsize
    size = Path(path).stat().st_size
    if size < need:
        raise InputError(f"{path}: truncated .npy file ({size} bytes, header promises {need})")
    if size > need:
        raise InputError(f"{path}: {size - need} bytes after the array data ({size} bytes, "
                         f"header promises {need}); corrupt or not one array: refusing it")
    return shape, fortran, dtype, offset


def _open_npy(path):
    """Memory-map a .npy after checking its header; never unpickles. InputError if unreadable."""
    _npy_header(path)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise InputError(f"{path}: not a readable .npy file ({e})") from None


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


def _row_chunks(path, rows=LOAD_CHUNK_ROWS):
    """(first row, dense block) of a 2-D .npy, read with plain reads: no memory map, so the
    file's pages never count against the process's memory (Fortran order: via a map)."""
    shape, fortran, dtype, offset = _npy_header(path)
    if fortran:
        arr = _open_npy(path)
        for start in range(0, shape[0], rows):
            yield start, np.asarray(arr[start:start + rows])
        return
    row_bytes = shape[1] * dtype.itemsize
    with open(path, "rb") as f:
        f.seek(offset)
        for start in range(0, shape[0], rows):
            k = min(rows, shape[0] - start)
            buf = f.read(k * row_bytes)
            if len(buf) != k * row_bytes:
                raise InputError(f"{path}: truncated .npy file (ends inside row {start})")
            yield start, np.frombuffer(buf, dtype=dtype).reshape(k, shape[1])


def _dense_to_csr(path, n_rows, n_features, feature_ids):
    """Read a dense activations file chunk-wise into CSR float32 (optionally a column subset)."""
    cols = None if feature_ids is None else np.asarray(feature_ids, dtype=np.intp)
    data, indices, counts, n_neg = [], [], [], 0
    for start, block in _row_chunks(path):
        if cols is not None:
            block = block[:, cols]
        raw = block
        with np.errstate(over="ignore"):
            block = np.ascontiguousarray(block, dtype=np.float32)
        if not np.isfinite(block.sum(dtype=np.float64)) and not np.isfinite(block).all():
            r, c = np.argwhere(~np.isfinite(block))[0]
            what = (f"value {raw[r, c]:.3g} outside the float32 range" if np.isfinite(raw[r, c])
                    else f"non-finite value {block[r, c]}")
            raise InputError(f"{path}: {what} at row {start + r}, "
                             f"feature {c if cols is None else cols[c]}")
        n_neg += int(np.count_nonzero(block < 0))
        d, i, k = _dense_to_csr_parts(block)
        data.append(d)
        indices.append(i)
        counts.append(k)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts), out=indptr[1:])
    if indptr[-1] < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    n_cols = n_features if cols is None else len(cols)
    X = sp.csr_matrix((np.concatenate(data), np.concatenate(indices), indptr),
                      shape=(n_rows, n_cols))
    return X, n_neg
