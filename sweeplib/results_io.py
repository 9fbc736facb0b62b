"""Writing a results folder without ever leaving it half-written, and touching only what this
tool provably created.

A writer holds `<folder>/.sweep.lock` (fcntl.flock; pid, host and start time inside) and writes
every output of the run into a staging folder `<folder>/.sweep-stage-<pid>-<token>/new/`. When
the whole run's outputs are written and fsynced, `commit_all()` switches them in: a journal is
written into the staging folder, the folder's stale derived outputs (report, dashboard, figures)
are removed, the files are moved into place with os.replace (each step's JSON last), then the
journal and the staging folder go. A run killed before the journal exists leaves the folder
unchanged (its staging folder is removed by the next writer); a run killed during the moves is
completed by the next writer (roll forward); readers refuse a folder whose journal is pending.

Staging folders carry owned.py's OWNER.json marker (tool, pid, host, process start time, the
random token of the folder's name); stale-file cleanup removes a folder only when its marker is
this tool's and names a process of this host that is gone.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import stat
import sys
import threading
from pathlib import Path

from sweeplib import console, owned, ownership
from sweeplib.folderlock import LOCK_NAME, FolderLock  # noqa: F401 - part of this API
from sweeplib.base import InputError, WriteError
from sweeplib.owned import JOURNAL, describe
from sweeplib import base
from sweeplib import hints

STAGE_PREFIX = ".sweep-stage-"
TMP_PREFIX = base.TMP_PREFIX
# outputs computed from a folder's step files: removed when the step files they show change
DERIVED = base.DERIVED
MARKS = owned.MARKS


# --------------------------------------------------------------------------------------------
# Staging and the switch
# --------------------------------------------------------------------------------------------
def _write(path, data):
    """owned.write_file, with OSError as WriteError naming the file."""
    try:
        owned.write_file(path, data)
    except OSError as e:
        raise WriteError(f"{path}: cannot write ({e.strerror or e})") from None


def _switch_order(names):
    """Files in switch order: data files first, each step's JSON record last."""
    return sorted(names, key=lambda n: (n.startswith("step_") and n.endswith(".json"), n))


class Stage:
    """A staging folder in a results folder: outputs are written to .path under their final
    names and switched in together by commit()."""

    def __init__(self, folder):
        self.folder = Path(folder)
        try:
            self.dir = owned.make_dir(self.folder, STAGE_PREFIX, "stage")
        except OSError as e:
            raise WriteError(f"{self.folder}: cannot write ({e.strerror or e})") from None
        self.path = self.dir / "new"
        self.path.mkdir()

    def write(self, name, data):
        """Write one output file (bytes) into the stage."""
        base.atomic_write(self.path / name, data)

    def commit(self, roots=(), derived=True):
        """Switch the staged files into the folder; remove derived outputs of the folder and of
        roots (unless derived=False). Returns the removed derived outputs."""
        journal, removed = self.prepare(roots, derived)
        with _signals_deferred():
            _apply(self.dir, journal)
        return removed

    def prepare(self, roots=(), derived=True):
        """Check the targets and write the switch's journal (from here on the switch is
        carried out, by this run or, if it dies, by the next one); (journal, derived outputs
        it removes)."""
        names = _switch_order(p.name for p in self.path.iterdir()
                              if p.is_file() and not p.name.startswith("."))
        for name in names:
            target = self.folder / name
            if target.is_symlink() or not target.exists() or target.is_file():
                continue
            raise InputError(f"{target}: exists and is not a regular file; refusing to replace "
                             f"it (results folder unchanged)")
        derived = [Path(r) / d for r in dict.fromkeys([self.folder, *map(Path, roots)])
                   for d in DERIVED if derived and (Path(r) / d).is_file()]
        moves = self._marks(names, derived)
        removes = [rel for p in derived for rel in (os.path.relpath(p, self.folder),
                                                    os.path.relpath(p.parent / MARKS / p.name,
                                                                    self.folder))]
        journal = {"tool": owned.TOOL, "moves": moves, "remove": removes}
        _write(self.dir / JOURNAL, json.dumps(journal).encode())
        owned.fsync_dir(self.dir)
        return journal, derived

    def _marks(self, names, derived):
        """The switch's moves: each file's ownership mark (written into the stage) before the
        file; a folder of this tool written before marks existed has its other files adopted
        (marked as they are)."""
        staged_marks = self.path / MARKS
        staged_marks.mkdir(exist_ok=True)
        moves = []
        for name in names:
            _write(staged_marks / name, owned.file_sha256(self.path / name).encode())
            moves += [f"{MARKS}/{name}", name]
        if owned.read_marks(self.folder) is None:
            gone = {p.name for p in derived if p.parent == self.folder}
            for name in ownership.tool_files(self.folder):
                digest = owned.file_sha256(self.folder / name)
                if name not in names and name not in gone and digest:
                    _write(staged_marks / name, digest.encode())
                    moves.append(f"{MARKS}/{name}")
        return moves

    def abort(self):
        """Drop the stage (nothing was switched)."""
        shutil.rmtree(self.dir, ignore_errors=True)


def _apply(stage_dir, journal):
    """Carry out a journal: remove derived outputs, move staged files in, drop the stage."""
    folder = stage_dir.parent
    try:
        for rel in journal["remove"]:
            (folder / rel).unlink(missing_ok=True)
        os.makedirs(folder / MARKS, exist_ok=True)
        for name in journal["moves"]:
            src = stage_dir / "new" / name
            if src.exists():
                os.replace(src, folder / name)
        owned.fsync_dir(folder)
    except OSError as e:
        raise WriteError(f"{folder}: switching in the new results failed ({e.strerror or e}); "
                         "the next run on this folder completes the switch") from None
    shutil.rmtree(stage_dir, ignore_errors=True)


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT / SIGTERM until the block ends (the switch is never cut in half)."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def pending_switches(folder):
    """Markers of this tool's staging folders in folder whose switch was started (journal)."""
    out = []
    with contextlib.suppress(OSError):
        for d in Path(folder).iterdir():
            if d.name.startswith(STAGE_PREFIX) and (d / JOURNAL).is_file():
                rec = owned.read_owner(d, STAGE_PREFIX)
                if rec:
                    out.append((d, rec))
    return out


def recover(folder):
    """Before writing into folder (lock held): finish interrupted switches there and below it,
    remove this tool's stale staging and temp folders. Returns notes for the console."""
    notes = []
    folder = Path(folder)
    for dirpath, dirnames, _ in os.walk(folder):
        here = Path(dirpath)
        for d, rec in pending_switches(here):
            if rec["pid"] == os.getpid() or owned.alive(rec):
                continue
            try:
                journal = json.loads((d / JOURNAL).read_text())
                _apply(d, journal)
            except (OSError, ValueError, KeyError, TypeError):
                raise InputError(f"{d / JOURNAL}: cannot complete the interrupted switch of "
                                 f"{here}; move that folder away and rerun") from None
            notes.append(f"note: {here}: completed the switch interrupted in the run of "
                         f"{describe(rec)}")
        for d in owned.remove_stale(here, STAGE_PREFIX) + owned.remove_stale(here, TMP_PREFIX):
            notes.append(f"note: removed {d} (left by a run that no longer exists)")
        dirnames[:] = [n for n in dirnames if not n.startswith(".")]
    return notes


# --------------------------------------------------------------------------------------------
# Session: the locks, stages and commits of one command
# --------------------------------------------------------------------------------------------
class Session:
    """What one command holds and has written."""

    def __init__(self):
        self.root = None
        self.locks = {}
        self.stages = {}
        self.committed = []
        self.removed = []
        self.created = []


_SESSION = None
LAST = Session()            # the last finished session (for the interrupt / error message)


@contextlib.contextmanager
def session():
    """Locks and stages of one command: on success pending stages are committed, on failure
    dropped; locks are released in any case."""
    global _SESSION, LAST
    _SESSION = s = Session()
    ok = False
    try:
        yield s
        ok = True
    finally:
        with _signals_deferred():
            try:
                if ok:
                    commit_all()
            finally:
                for st in s.stages.values():
                    st.abort()
                s.stages.clear()
                for lk in s.locks.values():
                    lk.release()
                if not ok:
                    for d in s.created:
                        with contextlib.suppress(OSError):
                            d.rmdir()              # only if still empty
                _SESSION, LAST = None, s


def _key(folder):
    """Registry key of a folder."""
    return os.path.realpath(folder)


def claim(folder):
    """Start writing into folder (the command's root): lock it now when it exists."""
    if _SESSION is not None and _SESSION.root is None:
        _SESSION.root = Path(folder)
    st = base.entry_state(folder, "results directory")   # InputError: too long, no access
    if st is not None and stat.S_ISDIR(st.st_mode):
        lock(folder)
        ownership.check_ownership(folder)


def lock(folder, created=False):
    """Hold the results-folder lock of folder for the rest of the command (idempotent); finish
    or clean what earlier runs left there."""
    key = _key(folder)
    reg = _SESSION.locks if _SESSION is not None else _IMPLICIT_LOCKS
    if key in reg:
        return
    ownership.check_inside(folder, _SESSION.root if _SESSION is not None else None)
    if created and _SESSION is not None:
        _SESSION.created.append(Path(folder))
    reg[key] = FolderLock(folder).acquire()
    for note in recover(folder):
        print(note, file=sys.stderr)


_IMPLICIT_LOCKS = {}        # library use without a session: held until the stage commits


def stage(folder):
    """The command's stage for folder (created on first use; the folder must be locked)."""
    lock(folder)
    stages = _SESSION.stages if _SESSION is not None else {}
    key = _key(folder)
    if key not in stages:
        stages[key] = Stage(folder)
    return stages[key]


def done(st):
    """A stage is complete: commit it now without a session, else with the session."""
    if _SESSION is None:
        try:
            st.commit()
        finally:
            st.abort()
            lk = _IMPLICIT_LOCKS.pop(_key(st.folder), None)
            if lk:
                lk.release()


def commit_all(derived=True):
    """Switch in every pending stage of the session (each folder's files in one switch);
    derived=False keeps the root's report, dashboard and figures (a grid run)."""
    s = _SESSION
    if s is None:
        return
    roots = [s.root] if s.root is not None else []
    # every folder's journal first, then the moves: a run killed in between leaves journals
    # for all of them, and the next run completes every switch (not only the first ones)
    prepared = [(key, *s.stages[key].prepare(roots, derived)) for key in list(s.stages)]
    with _signals_deferred():
        for key, journal, removed in prepared:
            st = s.stages.pop(key)
            _apply(st.dir, journal)
            s.removed += removed
            s.committed.append(st.folder)


def removed_outputs():
    """The derived outputs the session's switch removed as stale (they showed the previous
    results), in order, each once."""
    s = _SESSION
    return list(dict.fromkeys(s.removed)) if s is not None else []


def summary(s=None):
    """What a stopped command left: unchanged, or which folders were switched."""
    s = s or LAST
    if not s.committed:
        return "results folder unchanged"
    folders = ", ".join(dict.fromkeys(str(f) for f in s.committed))
    main = s.root if s.root is not None else s.committed[0]
    return (f"the new results were switched in complete ({folders}); what comes after them "
            "(report, dashboard, figures) was not written: run "
            + hints.command("generate_report.py", "--results-dir", Path(main)))


def _shown(message):
    """A message with staged paths shown as the results they stand for."""
    return re.sub(r"/\.sweep-(?:stage|tmp)-\d+-[0-9a-f]{16}(?:/new)?/([^/:]+)", r"/\1 (staged)",
                  message)


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so parallel batches abort and their workers stop."""


def _on_signal(signum, frame):
    """SIGINT / SIGTERM handler: from now on the command is exiting, so background threads
    that wait on the workers being stopped (warm-up batch, executor manager) end quietly
    instead of printing tracebacks around the one-line message; raise in the main thread."""
    threading.excepthook = lambda args: None
    raise Interrupted(signum) if signum == signal.SIGTERM else KeyboardInterrupt


def _stop_workers():
    """Kill the local worker processes of the reusable executor, if any."""
    try:
        from joblib.externals.loky import reusable_executor
    except ImportError:
        return
    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        with contextlib.suppress(Exception):       # best effort while exiting
            executor.shutdown(wait=True, kill_workers=True)


def _interrupt_behind(e):
    """The interrupt an exception was raised from, or None: Python re-raises an exception from
    inside a class body's __set_name__ as a RuntimeError (a signal that lands while a module is
    being imported, e.g. scikit-learn on first use, arrives wrapped like that)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _interrupted(e):
    """Stop the workers, say what was kept in one line; the exit code of the signal."""
    _stop_workers()
    term = isinstance(e, Interrupted)
    print(f"interrupted{' (SIGTERM)' if term else ''}; {summary()}", file=sys.stderr)
    return 143 if term else 130


def run_cli(body):
    """Run a command's body in a session: one line and an exit code for every way it stops
    (2 bad input, 1 cannot write, 130 / 143 interrupted). The
    console is best effort (console.py): output that cannot be printed never costs results."""
    with console.guarded() as streams:
        code = _run_session(body)
        if streams.lost and code == 0:
            print(f"note: console output was cut short ({streams.lost}); the results were "
                  "written in full", file=sys.stderr)
    return code


def _run_session(body):
    """run_cli's body, with the signal handlers installed."""
    main = threading.current_thread() is threading.main_thread()    # handlers: main only
    old = ({sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
           if main else {})
    try:
        with session():
            return body()
    except InputError as e:
        code = base.die(str(e))
        if LAST.committed:
            print(f"note: {summary()}", file=sys.stderr)
        return code
    except WriteError as e:
        print(f"error: {_shown(str(e))}; {summary()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        return _interrupted(e)
    except Exception as e:
        stop = _interrupt_behind(e)
        if stop is None:
            raise
        return _interrupted(stop)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
