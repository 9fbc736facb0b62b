"""Files and folders this tool provably created, and nothing else.

Every temporary or staging folder the tool makes is `<prefix><pid>-<token>/` holding an
OWNER.json marker (tool name, pid, host, process start time, user, the same random token).
Stale-file cleanup removes a folder only when its marker is this tool's, the folder belongs to
this user and the marker names a process of this host that no longer runs (pid and start time,
so a reused pid does not count as alive). Look-alike names of other tools, users or hosts are
never touched. This module imports nothing from the project (common.py uses it).
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import secrets
import shutil
import socket
import stat
import sys
from pathlib import Path

TOOL = "distribution-sweep"
HOST = socket.gethostname()
OWNER = "OWNER.json"
JOURNAL = "JOURNAL.json"           # a staging folder whose switch has started (results_io.py)


def write_file(path, data, fsync=True):
    """Create path (must not exist) with data through os.write, then fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[:1 << 20]):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder):
    """fsync a directory so the renames inside it are durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def proc_start(pid):
    """Start time (clock ticks since boot) of a process, or None when unknown or gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        return int(text.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def owner_record(kind, token):
    """What a marker records about the process that created a folder."""
    return {"tool": TOOL, "kind": kind, "token": token, "pid": os.getpid(), "host": HOST,
            "uid": os.getuid(), "proc_start": proc_start(os.getpid()),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])[:300]}


def make_dir(base, prefix, kind):
    """Create <base>/<prefix><pid>-<token>/ with its OWNER.json marker (OSError on failure,
    nothing left behind); return its path."""
    token = secrets.token_hex(8)
    folder = Path(base) / f"{prefix}{os.getpid()}-{token}"
    os.mkdir(folder, 0o700)
    try:
        write_file(folder / OWNER, json.dumps(owner_record(kind, token)).encode())
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def read_owner(folder, prefix):
    """The marker of a folder this tool created (name, owner uid and marker agree), else None."""
    folder = Path(folder)
    pid_text, _, token = folder.name[len(prefix):].partition("-")
    if not (folder.name.startswith(prefix) and pid_text.isdigit() and len(token) == 16):
        return None
    try:
        st = os.lstat(folder)
        mst = os.lstat(folder / OWNER)
        if (not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid()
                or not stat.S_ISREG(mst.st_mode) or mst.st_size > 4096):
            return None
        rec = json.loads((folder / OWNER).read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(rec, dict) and rec.get("tool") == TOOL and rec.get("token") == token
            and rec.get("pid") == int(pid_text) and isinstance(rec.get("host"), str)):
        return None
    return rec


def alive(rec):
    """True / False whether the recorded process still runs; None when it is another host's."""
    if rec.get("host") != HOST:
        return None
    pid = rec.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = rec.get("proc_start")
    return start is None or proc_start(pid) in (None, start)


def describe(rec):
    """'pid P on host H since T, `command`' of a marker or lock record."""
    return (f"pid {rec.get('pid')} on host {rec.get('host')} since {rec.get('started')}"
            + (f", `{rec['command']}`" if rec.get("command") else ""))


def remove_stale(base, prefix):
    """Remove this tool's folders under base whose owner process is gone (never one with a
    pending journal, another host's or a foreign one); return the removed paths."""
    removed = []
    try:
        entries = [p for p in Path(base).iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for folder in entries:
        rec = read_owner(folder, prefix)
        if rec and alive(rec) is False and not (folder / JOURNAL).exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


# --------------------------------------------------------------------------------------------
# Ownership marks of the files in a results folder
# --------------------------------------------------------------------------------------------
# Every file the tool puts into a results folder under one of its names gets a mark
# <folder>/.sweep-owned/<name> holding the sha256 of the bytes written (the mark is written
# first, so a kill in between leaves a mark without its file, never a file without its mark).
# Only files with a mark are the tool's; the readers' and writers' check is in results_io.
MARKS = ".sweep-owned"


def file_sha256(path):
    """sha256 of a regular file (a symlink is not followed: None), None when absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        h = hashlib.sha256()
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_marks(folder):
    """{name: sha256} of the marks in a folder, or None when it has no marks folder."""
    marks = Path(folder) / MARKS
    try:
        st = os.lstat(marks)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return {}
    out = {}
    for entry in os.scandir(marks):
        if entry.is_file(follow_symlinks=False) and entry.stat().st_size <= 128:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                out[entry.name] = Path(entry.path).read_text().strip()
    return out


def write_mark(folder, name, digest):
    """Record that the tool writes `name` into folder with this sha256 (atomic replace)."""
    marks = Path(folder) / MARKS
    os.makedirs(marks, exist_ok=True)
    tmp = marks / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
    write_file(tmp, digest.encode(), fsync=False)
    os.replace(tmp, marks / name)


def drop_mark(folder, name):
    """Forget the mark of a file the tool removed."""
    with contextlib.suppress(OSError):
        os.unlink(Path(folder) / MARKS / name)
