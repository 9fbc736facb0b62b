"""The bottom of the package: the two errors every command turns into one line and an exit
code, the one atomic writer, phase timing, JSON-safe values and opening a regular file.

Everything above imports this; it imports only owned.py and console.py (stdlib only) from
the project.
"""
from __future__ import annotations

import errno
import math
import os
import shutil
import stat
import sys
import time
from pathlib import Path

import numpy as np

from sweeplib import owned
from sweeplib.console import printable  # noqa: F401 - the one escaping rule, used here


class InputError(Exception):
    """Bad input: the message's first line names the file (or flag) and the problem."""


class WriteError(Exception):
    """An output could not be written (disk full, I/O error): the message names the file;
    `reason` is the operating system's word for it."""

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason or message


def shown_path(path):
    """A path as an error shows it: whole, or shortened when it is over 200 characters (a path
    long enough to be refused by the operating system would fill the screen)."""
    text = str(path)
    return text if len(text) <= 200 else f"{text[:100]}...{text[-60:]} ({len(text)} characters)"


def die(message):
    """Print an error (first line names the file and the problem) and return exit code 2."""
    print(f"error: {printable(message, keep=chr(10))}", file=sys.stderr)
    return 2


# --------------------------------------------------------------------------------------------
# The one atomic writer
# --------------------------------------------------------------------------------------------
TMP_PREFIX = ".sweep-tmp-"     # owned temp folders of atomic_write (see owned.py)


def atomic_write(path, data):
    """Write path atomically: into a temp folder this tool owns next to it (owned.py), fsync,
    os.replace. data: bytes, or a function writing to a binary file (large arrays stream to
    disk). WriteError (naming path) when the disk is full or the folder not writable. The
    tool's one writer: results, reports, sidecars and the demo cache all go through it."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; cannot write a file there")
    tmp_dir = None
    try:
        owned.remove_stale(path.parent, TMP_PREFIX)
        tmp_dir = owned.make_dir(path.parent, TMP_PREFIX, "temp")
        if callable(data):
            with open(tmp_dir / path.name, "xb") as fh:
                data(fh)
                fh.flush()
                os.fsync(fh.fileno())
        else:
            owned.write_file(tmp_dir / path.name, data)
        os.replace(tmp_dir / path.name, path)
    except OSError as e:
        reason = e.strerror or str(e)
        raise WriteError(f"{path}: cannot write ({reason})", reason) from None
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)


# outputs computed from a folder's step files (report, dashboard, verdict, figures)
DERIVED = ("report.txt", "report.md", "report.csv", "dashboard.html", "verdict.json", "sweep.png",
           "score_distributions.png", "transfer_matrix.png", "methods.png")


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------
TIMINGS = {}                                # phase -> wall seconds, summed over the process


class timed:
    """Context manager adding the wall time of a block to TIMINGS[phase]."""

    def __init__(self, phase):
        self.phase = phase

    def __enter__(self):
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        TIMINGS[self.phase] = TIMINGS.get(self.phase, 0.0) + time.perf_counter() - self.t0


# --------------------------------------------------------------------------------------------
# JSON-safe values
# --------------------------------------------------------------------------------------------
def json_safe(x):
    """JSON-safe copy: numpy scalars and arrays to Python, non-finite floats to None, keys to
    strings (verdict.json and the dashboard's embedded data)."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_safe(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# --------------------------------------------------------------------------------------------
# Opening files
# --------------------------------------------------------------------------------------------
FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
              (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
              (stat.S_ISSOCK, "a socket"))


def file_kind(mode, other="not a regular file"):
    """What a stat mode is, in words ('a FIFO', 'a directory' ...; other for the rest)."""
    return next((name for test, name in FILE_KINDS if test(mode)), other)


def entry_state(path, what="file"):
    """os.stat of path (symlinks followed), None when nothing is there; InputError naming the
    path and the cause when something is there but cannot be looked at: a dangling symlink, a
    symlink loop, no permission, a path too long for the operating system."""
    try:
        return os.stat(path)
    except NotADirectoryError:
        return None                                # a parent is a file: nothing there
    except FileNotFoundError:
        try:
            target = os.readlink(path)
        except OSError:
            return None                            # nothing there (lstat finds nothing)
        raise InputError(f"{shown_path(path)}: {what} is a dangling symlink (-> "
                         f"{shown_path(target)})") from None
    except OSError as e:
        cause = {errno.ELOOP: "symlink loop", errno.ENAMETOOLONG: "path too long",
                 errno.EACCES: "permission denied", errno.EPERM: "permission denied"}.get(e.errno)
        raise InputError(f"{shown_path(path)}: {what}: "
                         f"{cause or 'cannot be looked at'} ({e.strerror})") from None


def check_folder(path, what):
    """InputError unless path is a readable folder (None when nothing is there)."""
    st = entry_state(path, what)
    if st is None:
        return None
    if not stat.S_ISDIR(st.st_mode):
        kind = file_kind(st.st_mode, "a regular file")
        raise InputError(f"{shown_path(path)}: {what} is {kind}, not a folder")
    try:
        os.listdir(path)
    except OSError as e:
        raise InputError(f"{shown_path(path)}: {what} cannot be read ({e.strerror})") from None
    return st


def open_regular(path, what="file"):
    """Open a regular file for reading; InputError for a missing file, a directory, FIFO or
    device (opened non-blocking, so a FIFO never hangs the run)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except OSError as e:
        raise InputError(f"{path}: cannot open {what} ({e.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = file_kind(mode)
        raise InputError(f"{path}: {what} is {kind}, not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")
