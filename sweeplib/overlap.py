"""Run independent work next to the main line: in a forked child process (its own core and
memory, no GIL contention) when the process is single-threaded, else in a thread.

    job = overlap.start(fn, *args)     # returns at once
    ...                                # the main line goes on
    value = job.result()               # fn's return value, or its exception re-raised
    job.cancel()                       # or: stop it, if its result is no longer wanted

    job = overlap.start(fn, inbox=True)   # fn(receive) gets work later: job.send(obj);
                                          # receive() returns it (None once job.close())

The child inherits the parent's memory copy-on-write (the loaded data is not copied or
pickled); only the return value travels back, pickled through a pipe. The child's output is
whatever fn prints itself; callers that want ordered output collect lines and print them.

A child never runs the parent's code: SIGINT and SIGTERM are blocked across the fork and
reset to their defaults in the child before they are unblocked (Ctrl-C or a stop ends it at
once, the parent does the cleanup), its body ends in os._exit whatever happens, it closes the
pipe ends of every other job it inherited (a later child must not hold a figure inbox open),
and on Linux it dies with its parent. Every child is reaped: by result(), close() or cancel(),
and at the latest when the process exits (atexit). A child that dies without a result is a
BackgroundError (one line), not a traceback.
"""
from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
import time

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_LIVE = []                  # jobs whose child process is not reaped yet (this process's)
KILL_GRACE = 2.0            # seconds between SIGTERM and SIGKILL when cancelling


class BackgroundError(RuntimeError):
    """A background process ended without handing back a result (killed, crashed, or its
    pipe broke); the message says which job and how it ended."""


class Job:
    """A function running in a forked child or a thread; result() waits for it."""

    def __init__(self, fn, args, kwargs, fork=None, inbox=False):
        self.started = time.perf_counter()
        fork = can_fork() if fork is None else fork
        self.mode = "process" if fork else "thread"
        self.name = getattr(fn, "__name__", "job")       # in error messages; callers may set it
        self._out = None
        self._to = None
        self._pid = None
        self._status = None
        if fork:
            self._fork(fn, args, kwargs, inbox)
        else:
            if inbox:
                self._queue = queue.Queue()
                args = (self._queue.get,) + tuple(args)
            self._thread = threading.Thread(target=self._run, args=(fn, args, kwargs),
                                            daemon=True)
            self._thread.start()

    def _fork(self, fn, args, kwargs, inbox):
        """Start the child: signals held across the fork so that none reaches the child
        while it still has the parent's handlers."""
        self._recv, send = multiprocessing.Pipe(duplex=False)
        child_in = None
        if inbox:
            child_in, self._to = multiprocessing.Pipe(duplex=False)
            args = (_receiver(child_in),) + tuple(args)
        sys.stdout.flush()
        sys.stderr.flush()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:                                        # the child: never returns
                _child_main(self, send, fn, args, kwargs, mask)
        except OSError:
            self._drop_in_child()                               # no child: close our ends
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)   # (a held signal lands here)
            send.close()
            if child_in is not None:
                child_in.close()
        self._pid = pid
        _LIVE.append(self)

    def send(self, obj):
        """Hand work to fn (it receives obj from its receive()); a child that is gone is
        reported by result()."""
        if self.mode == "thread":
            self._queue.put(obj)
            return
        try:
            self._to.send(obj)
        except OSError:
            pass                        # the child is gone: result() says how it ended

    def close(self):
        """No more work: fn's receive() returns None; a child process is waited for (its
        result kept for result())."""
        if self.mode == "thread":
            self._queue.put(None)
            return
        if self._to is not None and not self._to.closed:
            self._to.close()
        if self._pid:
            self._out = self._collect(raise_error=False)

    def _run(self, fn, args, kwargs):
        """Thread body: keep the value or the exception."""
        try:
            self._out = ("ok", fn(*args, **kwargs), time.perf_counter() - self.started)
        except BaseException as e:                # handed to result(), which re-raises it
            self._out = ("error", e, time.perf_counter() - self.started)

    def result(self):
        """fn's return value (waiting for it); its exception is re-raised here;
        BackgroundError when a child ended without a result."""
        if self._out is None:
            if self.mode == "thread":
                self._thread.join()
            elif self._pid:
                self._out = self._collect(raise_error=True)
            else:
                raise BackgroundError(f"{self.name} (background {self.mode}): no result "
                                      f"({self._status or 'not started'})")
        kind, value, self.seconds = self._out
        if kind == "error":
            raise value
        return value

    def _collect(self, raise_error):
        """Read the child's result (before waiting for it: a result larger than the pipe's
        buffer would block the child's exit), then reap it."""
        try:
            out = self._recv.recv()
        except (EOFError, OSError, pickle.UnpicklingError) as e:
            status = self._reap()
            if not raise_error:
                return None
            why = "" if isinstance(e, EOFError) else f"; {type(e).__name__}: {e}"
            raise BackgroundError(f"{self.name} (background process): ended without a "
                                  f"result ({status}{why})") from None
        self._reap()
        return out

    def cancel(self):
        """Stop a child process that is no longer wanted and reap it (a thread is left to
        finish). Safe to call at any time, also after result()."""
        if self.mode != "process" or not self._pid:
            return
        for conn in (self._to, self._recv):      # a child blocked writing gets EPIPE
            if conn is not None:
                conn.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE
        while time.monotonic() < deadline:
            if os.waitpid(self._pid, os.WNOHANG)[0]:
                self._done("cancelled")
                return
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)
        self._reap()
        self._status = "cancelled"

    def _reap(self):
        """Wait for the child process to end; its exit status as text."""
        if not self._pid:
            return self._status or "already reaped"
        try:
            _, status = os.waitpid(self._pid, 0)
            text = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                    else f"exit status {os.WEXITSTATUS(status)}")
        except ChildProcessError:
            text = "already reaped"
        self._done(text)
        return text

    def _done(self, status):
        """The child is reaped: close this side's pipe ends, forget the pid."""
        for conn in (self._to, self._recv):
            if conn is not None:
                conn.close()
        self._pid, self._status = None, status
        with contextlib.suppress(ValueError):
            _LIVE.remove(self)

    def _drop_in_child(self):
        """In a newly forked child (or when the fork failed): close this job's parent-side
        pipe ends, never wait."""
        for conn in (self._to, self._recv):
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.close()
        self._pid = None


def _receiver(conn):
    """receive() of a child: the next object sent, None once the parent closed its end."""
    def receive():
        """The next object sent, or None once the parent closed its end."""
        try:
            return conn.recv()
        except (EOFError, OSError):
            return None
    return receive


def _child_main(job, send, fn, args, kwargs, mask):
    """Everything a forked child does; always ends in os._exit (never returns into the
    parent's code path, whatever is raised)."""
    code = 70                                          # EX_SOFTWARE: failed before fn ran
    try:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for other in _LIVE:                            # pipes of the parent's other jobs
            other._drop_in_child()
        _LIVE.clear()
        job._drop_in_child()                           # this job's parent-side ends
        _die_with_parent()
        code = _child(send, fn, args, kwargs)
    finally:
        os._exit(code)


def _die_with_parent():
    """Linux: the kernel sends SIGKILL to this child when its parent dies (no orphan left
    computing for nobody); elsewhere nothing (the child's result write fails, and it ends)."""
    parent = os.getppid()
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)          # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:                                # died before prctl took hold
        os._exit(0)


def _child(send, fn, args, kwargs):
    """Child process body: send (kind, value, seconds) back; returns the exit code."""
    t0 = time.perf_counter()
    try:
        out = ("ok", fn(*args, **kwargs), time.perf_counter() - t0)
    except BaseException as e:
        out = ("error", e, time.perf_counter() - t0)
    try:
        send.send(out)
        return 0
    except OSError:
        return 0                                   # the parent no longer wants the result
    except Exception as e:                         # an unpicklable value or exception
        try:
            send.send(("error", RuntimeError(f"background result not transferable: {e!r}"),
                       time.perf_counter() - t0))
            return 0
        except Exception:
            return 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()


def can_fork():
    """Fork only from a single-threaded process on a platform that has fork."""
    return hasattr(os, "fork") and threading.active_count() == 1


def start(fn, *args, inbox=False, **kwargs):
    """Start fn(*args, **kwargs) next to the caller (with inbox: fn(receive, *args, ...));
    returns a Job."""
    return Job(fn, args, kwargs, inbox=inbox)


def cancel_all():
    """Stop and reap every child this process still has (at exit: no orphan, no zombie)."""
    for job in list(_LIVE):
        with contextlib.suppress(Exception):
            job.cancel()


atexit.register(cancel_all)
