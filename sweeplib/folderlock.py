"""The results-folder lock: an exclusive flock on <folder>/.sweep.lock naming its holder (pid,
host, start time, command), removed on release; an entry in its place that is not a regular
file is refused, naming it. Used by results_io.py.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import sys
from pathlib import Path

from sweeplib import base, owned
from sweeplib.base import InputError, WriteError
from sweeplib.owned import describe

LOCK_NAME = ".sweep.lock"


class FolderLock:
    """An exclusive flock on <folder>/.sweep.lock naming its holder; removed on release."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd = None

    def acquire(self):
        """Take the lock or raise InputError naming the process that holds it."""
        for _ in range(20):
            self._check_entry()
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                             | os.O_NONBLOCK, 0o644)
            except OSError as e:
                self._check_entry()
                raise InputError(f"{self.folder}: results directory is not writable "
                                 f"({e.strerror})") from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                self._check_entry()
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_lock_record(fd)
                os.close(fd)
                raise InputError(f"{self.folder}: in use by another run ("
                                 + (describe(holder) if holder else "holder unknown")
                                 + "); wait for it to finish or use another --results-dir"
                                 ) from None
            except OSError as e:           # no locking on this filesystem: say so, go on
                print(f"warning: {self.path}: cannot lock ({e.strerror}); concurrent runs "
                      "into this folder are not detected", file=sys.stderr)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:                   # removed by its previous holder meanwhile: retry
                os.close(fd)
                continue
            self.fd = fd
            try:
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(owned.owner_record("lock", "")).encode())
            except OSError as e:
                self.release()
                raise WriteError(f"{self.path}: cannot write ({e.strerror or e})") from None
            return self
        raise InputError(f"{self.folder}: cannot take the results-folder lock {LOCK_NAME}")

    def _check_entry(self):
        """InputError naming the lock entry when something else than a file is there."""
        try:
            mode = os.lstat(self.path).st_mode
        except OSError:
            return
        if not stat.S_ISREG(mode):
            kind = "a symlink" if stat.S_ISLNK(mode) else base.file_kind(mode)
            raise InputError(f"{self.path}: the results-folder lock is {kind}, not a regular "
                             "file; move it away (no run of this tool makes one)")

    def release(self):
        """Remove the lock file (while still holding it) and unlock."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            if os.fstat(self.fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)
        os.close(self.fd)
        self.fd = None


def _read_lock_record(fd):
    """The holder record inside a lock file, or None."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        rec = json.loads(os.read(fd, 4096).decode())
        return rec if isinstance(rec, dict) else None
    except (OSError, ValueError):
        return None
