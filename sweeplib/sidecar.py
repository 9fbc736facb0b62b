"""Sparse sidecar cache: each dense activations file's CSR form, stored next to it (or in
--sidecar-dir) on first load, so that later runs skip the dense -> sparse conversion.

    <layer dir>/<stem>_activations.npy        the cache (dense float32, never modified)
    <layer dir>/<stem>_activations.csr.npz    its sidecar (CSR float32, ~8 bytes per non-zero)

A sidecar is used only when it proves to be the dense file's: it records the dense file's
fingerprint (size and sha256 of the whole file: data.fingerprint) and a CRC32 of
its own arrays, and on every load it is checked against both, its structure is validated, and
a few rows (seeded) are compared with the dense file's. Anything else (stale, truncated,
corrupt in any way, another format version, not a regular file: a FIFO is never opened) is
noted on one line and rebuilt from the dense file: the dense file is the truth, a sidecar a
disposable copy.
Sidecars are written atomically (base.atomic_write: temp folder, fsync, rename); an unwritable
folder is noted once and the run goes on without them. --no-sidecar turns the cache off.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from sweeplib.base import InputError, WriteError, atomic_write, file_kind, open_regular

FORMAT = 1
SUFFIX = ".csr.npz"
SPOT_ROWS = 8                  # dense rows compared with the sidecar on every load
ARRAYS = ("data", "indices", "indptr")


class Store:
    """Where sidecars live; what happened is kept as one-line notes (`notes`, also passed to
    `note` when given) for the caller to print once loading succeeded."""

    def __init__(self, folder=None, note=None):
        self.folder = None if folder is None else Path(folder)
        self.notes = []
        self._note = note
        self.refused = {}
        self.unwritable = set()
        self.stats = {"hits": 0, "written": 0, "rebuilt": 0, "bytes": 0}
        self.fingerprints = {}         # dense path -> the fingerprint loads were checked with

    def note(self, text):
        """Keep a one-line note."""
        self.notes.append(text)
        if self._note is not None:
            self._note(text)

    def path_for(self, dense):
        """The sidecar of a dense file: next to it, or in the folder, keyed by its path."""
        dense = Path(dense)
        name = dense.name[:-len(".npy")] if dense.name.endswith(".npy") else dense.name
        if self.folder is None:
            return dense.with_name(name + SUFFIX)
        key = hashlib.sha256(str(dense.resolve()).encode()).hexdigest()[:16]
        return self.folder / f"{name}.{key}{SUFFIX}"

    def load(self, dense, shape, fingerprint):
        """(CSR matrix, negative-value count) from a valid sidecar, or None (noted when one
        exists but cannot be used).

        The dense file is the truth and a sidecar only a disposable copy of it, so any failure
        to read or verify one (stale, truncated, damaged in any way the zip, .npy header or
        JSON parsers can object to, not a regular file) means: rebuild it from the dense file,
        with a one-line note. Only MemoryError (and interrupts) pass through."""
        self.fingerprints[str(dense)] = fingerprint     # the run's input fingerprint too
        path = self.path_for(dense)
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            return None
        except OSError as e:
            self.refused[path] = f"unreadable ({e.strerror or e})"
            return None
        try:
            if not stat.S_ISREG(mode):           # a FIFO or device must never be opened
                raise _Invalid(f"{file_kind(mode)}, not a regular file")
            X, n_neg = _read(path, shape, fingerprint)
            _spot_check(dense, X)
        except MemoryError:
            raise
        except Exception as e:                   # noqa: BLE001 - a derived copy, rebuilt
            self.refused[path] = _damage(e)      # noted once it is rebuilt (save)
            return None
        self.stats["hits"] += 1
        self.stats["bytes"] += path.stat().st_size
        return X, n_neg

    def save(self, dense, X, n_neg, fingerprint):
        """Write the sidecar atomically; note once per folder when that is impossible."""
        path = self.path_for(dense)
        folder = path.parent
        if folder in self.unwritable:
            return None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: np.savez(f, **_arrays(X, n_neg, fingerprint)))
        except InputError:                       # a directory where the sidecar goes
            self.refused.pop(path, None)
            self.note(f"note: {path}: is a directory, not a sparse sidecar; converting "
                      f"{Path(dense).name} from dense each run (move it away)")
            return None
        except (OSError, WriteError) as e:
            reason = e.reason if isinstance(e, WriteError) else (e.strerror or e)
            self.unwritable.add(folder)
            self.note(f"note: {folder}: cannot write sparse sidecars ({reason}); "
                      "converting from dense each run (--sidecar-dir DIR stores them "
                      "elsewhere, --no-sidecar turns this off)")
            return None
        self.stats["written"] += 1
        self.stats["bytes"] += path.stat().st_size
        if path in self.refused:
            self.stats["rebuilt"] += 1
            self.note(f"note: {path}: {self.refused.pop(path)}; rebuilt from "
                      f"{Path(dense).name}")
        return path


class _Invalid(Exception):
    """A sidecar that must not be used (the message says why)."""


def _damage(e):
    """Why a sidecar cannot be used, in a few words of ours (the parsers' own messages can
    mislead: numpy calls any non-.npy bytes 'pickled data')."""
    if isinstance(e, _Invalid):
        return str(e)
    if isinstance(e, (zipfile.BadZipFile, EOFError)):
        return "damaged (truncated or not an .npz archive)"
    if isinstance(e, OSError):
        return f"unreadable ({e.strerror or type(e).__name__})"
    return f"damaged (unreadable: {type(e).__name__})"


def _checksum(X):
    """CRC32 over the CSR arrays' bytes."""
    crc = 0
    for name in ARRAYS:
        crc = zlib.crc32(np.ascontiguousarray(getattr(X, name)), crc)
    return crc


def _arrays(X, n_neg, fingerprint):
    """What a sidecar file holds."""
    meta = {"format": FORMAT, "shape": list(X.shape), "n_negative": int(n_neg),
            "source": fingerprint, "crc32": _checksum(X)}
    return {"data": X.data, "indices": X.indices, "indptr": X.indptr,
            "meta": np.array(json.dumps(meta, sort_keys=True))}


def _read(path, shape, fingerprint):
    """Read and validate a sidecar: version, source fingerprint, checksum, structure."""
    with open_regular(path, "sparse sidecar") as fh:
        if fh.read(4) != b"PK\x03\x04":                 # numpy would call it "pickled data"
            raise _Invalid("damaged (not an .npz archive)")
        fh.seek(0)
        with np.load(fh, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if not isinstance(meta, dict):
                raise _Invalid("damaged (no metadata record)")
            if meta.get("format") != FORMAT:
                raise _Invalid(f"sidecar format {meta.get('format')}, expected {FORMAT}")
            if meta.get("source") != fingerprint:
                raise _Invalid("stale (the dense file changed since it was written)")
            if tuple(meta.get("shape", ())) != tuple(shape):
                raise _Invalid(f"shape {meta.get('shape')} differs from the dense file's "
                               f"{shape}")
            data, indices, indptr = (z[name] for name in ARRAYS)
    X = sp.csr_matrix((data, indices, indptr), shape=tuple(shape), copy=False)
    if _checksum(X) != meta.get("crc32"):
        raise _Invalid("checksum mismatch (corrupt)")
    _check_structure(data, indices, indptr, shape)
    return X, int(meta["n_negative"])


def _check_structure(data, indices, indptr, shape):
    """Canonical CSR: float32 finite values, sorted in-range column indices per row."""
    n_rows, n_cols = shape
    if data.dtype != np.float32 or indices.dtype.kind != "i" or indptr.dtype.kind != "i":
        raise _Invalid("unexpected array types")
    if len(indptr) != n_rows + 1 or indptr[0] != 0 or indptr[-1] != len(data) \
            or len(indices) != len(data) or np.any(np.diff(indptr) < 0):
        raise _Invalid("inconsistent row pointers")
    if len(indices) and (indices.min() < 0 or indices.max() >= n_cols):
        raise _Invalid("column index out of range")
    step = indices[1:] > indices[:-1]
    starts = indptr[1:-1]
    step[starts[(starts > 0) & (starts < len(data))] - 1] = True    # a new row may go down
    if not np.all(step):
        raise _Invalid("column indices not sorted within rows")
    if not np.isfinite(data).all() or np.any(data == 0):
        raise _Invalid("non-finite or explicit zero values")


def _spot_check(dense, X):
    """Compare a few rows (first, last and seeded ones) with the dense file, exactly."""
    arr = np.load(dense, mmap_mode="r", allow_pickle=False)
    n = X.shape[0]
    rng = np.random.default_rng(zlib.crc32(str(Path(dense).name).encode()))
    rows = np.unique(np.r_[0, n - 1, rng.integers(0, n, size=min(SPOT_ROWS, n))])
    want = np.asarray(arr[rows], dtype=np.float32)
    if not np.array_equal(X[rows].toarray(), want):
        raise _Invalid("rows differ from the dense file")
