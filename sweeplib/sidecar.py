"""Sparse sidecar cache: each dense activations file's CSR form, stored next to it (or in
--sidecar-dir) on first load, so that later runs skip the dense -> sparse conversion.

    <layer dir>/<stem>_activations.npy        the cache (dense float32, never modified)
    <layer dir>/<stem>_activations.csr.npz    its sidecar (CSR float32, ~8 bytes per non-zero)

A sidecar supplies numbers, so one is used only when it proves that this user's tool made it
from a dense file whose bytes have the sha256 the run records. Trust model: a sidecar carries an
HMAC-SHA256, under a per-user secret key (key_path(): ~/.cache/distribution-sweep/sidecar.key,
created 0600 on first use; refused when another user could read or replace it), over the dense
file's fingerprint (size and sha256 of the whole file, hashed on every load) and every byte of
its own arrays. Whoever cannot read that key cannot make a sidecar the tool accepts, wherever the
sidecar lies (next to a shared cache or in --sidecar-dir); one made by the tool for another
dense file fails the fingerprint comparison. Its structure is validated too. Anything else
(stale, truncated, forged, corrupt in any way, another format version, not a regular file: a
FIFO is never opened) is noted on one line and rebuilt from the dense file: the dense file is
the truth, a sidecar a disposable copy.
Sidecars are written atomically (base.atomic_write: temp folder, fsync, rename); an unwritable
folder is noted once and the run goes on without them. --no-sidecar turns the cache off.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from sweeplib.base import InputError, WriteError, atomic_write, file_kind, open_regular

FORMAT = 2                     # 2: HMAC under the user's key (1: CRC32, forgeable)
SUFFIX = ".csr.npz"
ARRAYS = ("data", "indices", "indptr")
KEY_BYTES = 32


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
        self._user_key = None          # the HMAC key, read once; False: refused (noted)

    def key(self):
        """The user's HMAC key, or None when it cannot be trusted (noted once: no sidecars)."""
        if self._user_key is None:
            try:
                self._user_key = user_key()
            except _KeyRefused as e:
                self._user_key = False
                self.note(f"note: {e}; sparse sidecars are neither read nor written")
        return self._user_key or None

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
        """(CSR matrix, negative-value count, the dense file's fingerprint) from a valid
        sidecar, or None (noted when one exists but cannot be used); fingerprint(dense) hashes
        the dense file, only when a sidecar is there.

        The dense file is the truth and a sidecar only a disposable copy of it, so any failure
        to read or verify one (stale, truncated, damaged in any way the zip, .npy header or
        JSON parsers can object to, not a regular file) means: rebuild it from the dense file,
        with a one-line note. Only MemoryError (and interrupts) pass through."""
        path = self.path_for(dense)
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            return None
        except OSError as e:
            self.refused[path] = f"unreadable ({e.strerror or e})"
            return None
        key = self.key()
        if key is None:
            return None
        fp = fingerprint(dense)
        try:
            if not stat.S_ISREG(mode):           # a FIFO or device must never be opened
                raise _Invalid(f"{file_kind(mode)}, not a regular file")
            X, n_neg = _read(path, shape, fp, key)
        except MemoryError:
            raise
        except Exception as e:                   # noqa: BLE001 - a derived copy, rebuilt
            self.refused[path] = _damage(e)      # noted once it is rebuilt (save)
            return None
        self.stats["hits"] += 1
        self.stats["bytes"] += path.stat().st_size
        self.fingerprints[str(dense)] = fp
        return X, n_neg, fp

    def save(self, dense, X, n_neg, fingerprint):
        """Write the sidecar atomically; note once per folder when that is impossible."""
        path = self.path_for(dense)
        folder = path.parent
        self.fingerprints[str(dense)] = fingerprint
        key = self.key()
        if folder in self.unwritable or key is None:
            return None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: np.savez(f, **_arrays(X, n_neg, fingerprint, key)))
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


def _mac(X, n_neg, fingerprint, key):
    """HMAC-SHA256 under the user's key over the dense file's fingerprint, the negative count,
    the shape and every byte of the CSR arrays (with their dtypes)."""
    head = json.dumps({"format": FORMAT, "source": fingerprint, "shape": list(X.shape),
                       "n_negative": int(n_neg)}, sort_keys=True)
    m = hmac.new(key, head.encode(), hashlib.sha256)
    for name in ARRAYS:
        arr = np.ascontiguousarray(getattr(X, name))
        m.update(f"{name}:{arr.dtype.str}:{arr.size};".encode())
        m.update(memoryview(arr).cast("B"))
    return m.hexdigest()


def _arrays(X, n_neg, fingerprint, key):
    """What a sidecar file holds."""
    meta = {"format": FORMAT, "shape": list(X.shape), "n_negative": int(n_neg),
            "source": fingerprint, "hmac": _mac(X, n_neg, fingerprint, key)}
    return {"data": X.data, "indices": X.indices, "indptr": X.indptr,
            "meta": np.array(json.dumps(meta, sort_keys=True))}


def _read(path, shape, fingerprint, key):
    """Read and validate a sidecar: version, source fingerprint, structure, then its HMAC."""
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
    _check_structure(data, indices, indptr, shape)
    X = sp.csr_matrix((data, indices, indptr), shape=tuple(shape), copy=False)
    n_neg = meta.get("n_negative")
    if not isinstance(n_neg, int) or isinstance(n_neg, bool) or not hmac.compare_digest(
            str(meta.get("hmac")), _mac(X, n_neg, fingerprint, key)):
        raise _Invalid("not made by this user's tool from this dense file (its HMAC does not "
                       "verify: forged or corrupt)")
    return X, n_neg


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


class _KeyRefused(Exception):
    """The user's sidecar key cannot be trusted or created (the message names the file)."""


def key_path():
    """Where the per-user secret key of the sidecars' HMAC lives."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "distribution-sweep" / "sidecar.key"


def user_key():
    """The per-user HMAC key (created 0600 in a 0700 folder on first use); _KeyRefused when
    it, or its folder, could be read or replaced by another user."""
    path = key_path()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _private(path.parent, stat.S_ISDIR)
        if not os.path.lexists(path):         # a whole key appears at once (link of a temp)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass                              # another process made it first: use theirs
            finally:
                os.unlink(tmp)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            _private(path, stat.S_ISREG, os.fstat(f.fileno()))
            key = f.read(KEY_BYTES + 1)
    except OSError as e:
        raise _KeyRefused(f"{path}: sidecar key cannot be used ({e.strerror or e})") from None
    if len(key) != KEY_BYTES:
        raise _KeyRefused(f"{path}: sidecar key is not {KEY_BYTES} bytes (move it away)")
    return key


def _private(path, is_kind, st=None):
    """_KeyRefused unless path is of the kind, owned by this user, not group/other writable
    (and, for the key, not readable by them)."""
    st = st or os.lstat(path)
    mask = 0o077 if is_kind is stat.S_ISREG else 0o022
    if not is_kind(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & mask:
        raise _KeyRefused(f"{path}: sidecar key (or its folder) is not private to this user "
                          f"(mode {stat.filemode(st.st_mode)}, uid {st.st_uid}); fix it or move "
                          "it away")
