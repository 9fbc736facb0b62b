"""Run independent work next to the main line: in a forked child process (its own core and
memory, no GIL contention) when the process is single-threaded, else in a thread.

    job = overlap.start(fn, *args)     # returns at once
    ...                                # the main line goes on
    value = job.result()               # fn's return value, or its exception re-raised

    job = overlap.start(fn, inbox=True)   # fn(receive) gets work later: job.send(obj);
                                          # receive() returns it (None once job.close())

The child inherits the parent's memory copy-on-write (the loaded data is not copied or
pickled); only the return value travels back, pickled through a pipe. The child's output is
whatever fn prints itself; callers that want ordered output collect lines and print them. A
child left waiting for work ends when the parent closes the inbox or exits.
"""
from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
import threading
import time


class Job:
    """A function running in a forked child or a thread; result() waits for it."""

    def __init__(self, fn, args, kwargs, fork=None, inbox=False):
        self.started = time.perf_counter()
        fork = can_fork() if fork is None else fork
        self.mode = "process" if fork else "thread"
        self._out = None
        self._to = None
        if fork:
            self._recv, send = multiprocessing.Pipe(duplex=False)
            if inbox:
                child_in, self._to = multiprocessing.Pipe(duplex=False)
                args = (_receiver(child_in),) + tuple(args)
            sys.stdout.flush()
            sys.stderr.flush()
            self._pid = os.fork()
            if self._pid == 0:                                  # the child: never returns
                self._recv.close()
                if inbox:
                    self._to.close()
                _child(send, fn, args, kwargs)
            send.close()
            if inbox:
                child_in.close()
        else:
            if inbox:
                self._queue = queue.Queue()
                args = (self._queue.get,) + tuple(args)
            self._thread = threading.Thread(target=self._run, args=(fn, args, kwargs),
                                            daemon=True)
            self._thread.start()

    def send(self, obj):
        """Hand work to fn (it receives obj from its receive())."""
        if self.mode == "process":
            self._to.send(obj)
        else:
            self._queue.put(obj)

    def close(self):
        """No more work: fn's receive() returns None; a child process is waited for."""
        if self.mode == "thread":
            self._queue.put(None)
            return
        if self._to is not None and not self._to.closed:
            self._to.close()
        if self._pid:
            try:
                self._out = self._recv.recv()
            except EOFError:
                pass
            self._reap()
            self._recv.close()

    def _run(self, fn, args, kwargs):
        """Thread body: keep the value or the exception."""
        try:
            self._out = ("ok", fn(*args, **kwargs), time.perf_counter() - self.started)
        except BaseException as e:                # handed to result(), which re-raises it
            self._out = ("error", e, time.perf_counter() - self.started)

    def result(self):
        """fn's return value (waiting for it); its exception is re-raised here."""
        if self._out is None:
            if self.mode == "thread":
                self._thread.join()
            else:
                try:
                    self._out = self._recv.recv()
                except EOFError:
                    status = self._reap()
                    raise RuntimeError(f"background process died ({status})") from None
                self._reap()
                self._recv.close()
        kind, value, self.seconds = self._out
        if kind == "error":
            raise value
        return value

    def cancel(self):
        """Stop a child process that is no longer wanted (a thread is left to finish)."""
        if self.mode == "process" and self._pid:
            try:
                os.kill(self._pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self._reap()

    def _reap(self):
        """Wait for the child process to end; its exit status as text."""
        if not self._pid:
            return "already reaped"
        _, status = os.waitpid(self._pid, 0)
        self._pid = None
        return f"wait status {status}"


def _receiver(conn):
    """receive() of a child: the next object sent, None once the parent closed its end."""
    def receive():
        """The next object sent, or None once the parent closed its end."""
        try:
            return conn.recv()
        except EOFError:
            return None
    return receive


def _child(send, fn, args, kwargs):
    """Child process body: send (kind, value, seconds) back and leave without cleanup
    handlers (they belong to the parent)."""
    t0 = time.perf_counter()
    try:
        out = ("ok", fn(*args, **kwargs), time.perf_counter() - t0)
    except BaseException as e:
        out = ("error", e, time.perf_counter() - t0)
    try:
        send.send(out)
    except (BrokenPipeError, ConnectionResetError):
        pass                                       # the parent no longer wants the result
    except Exception as e:                         # an unpicklable value or exception
        send.send(("error", RuntimeError(f"background result not transferable: {e!r}"),
                   time.perf_counter() - t0))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def can_fork():
    """Fork only from a single-threaded process on a platform that has fork."""
    return hasattr(os, "fork") and threading.active_count() == 1


def start(fn, *args, inbox=False, **kwargs):
    """Start fn(*args, **kwargs) next to the caller (with inbox: fn(receive, *args, ...));
    returns a Job."""
    return Job(fn, args, kwargs, inbox=inbox)
