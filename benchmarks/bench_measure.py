"""Measuring one benchmarked child process: wall and CPU time, the child's own peak RSS
(VmHWM, read by the child itself) and the process tree's peak RSS / PSS sampled from /proc.
Used by bench_sweep.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

POLL_S = 0.05                           # tree RSS sampling interval (s)
SLOW_POLL_S = 0.5                       # descendant rescan + tree PSS sampling interval (s)
PAGE = os.sysconf("SC_PAGE_SIZE")

# Child: `python -c CHILD_DRIVER OUT MODULE ARGS...` runs MODULE.main(ARGS) and writes
# {"timings": sweeplib.base.TIMINGS, "vmhwm_bytes": own peak RSS} to OUT, even on failure.
CHILD_DRIVER = """\
import importlib, json, sys
rc = 1
try:
    rc = importlib.import_module(sys.argv[2]).main(sys.argv[3:])
finally:
    hwm = None
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    timing = sys.modules.get("sweeplib.base") or sys.modules.get("common")   # older revisions
    with open(sys.argv[1], "w") as f:
        json.dump({"timings": getattr(timing, "TIMINGS", {}), "vmhwm_bytes": hwm}, f)
sys.exit(rc)
"""


class ChildFailed(Exception):
    """A benchmarked subprocess exited non-zero."""


def _children_map():
    """ppid -> [pid] of every process visible in /proc."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name is in parentheses and may hold spaces: split after the last ')'
        fields = stat[stat.rfind(b")") + 2:].split()
        out.setdefault(int(fields[1]), []).append(int(entry.name))
    return out


def _rss_bytes(pid):
    """Resident set size of one process (cheap: /proc/<pid>/statm); 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _pss_bytes(pid):
    """Proportional set size of one process (/proc/<pid>/smaps_rollup, which walks the page
    tables: milliseconds for a large process); its RSS when unreadable, 0 when gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return _rss_bytes(pid)


def descendants(root):
    """root and the pids of all its descendants."""
    kids = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


class TreeSampler(threading.Thread):
    """Peak memory of a process tree while it runs.

    Every POLL_S: summed RSS of the known pids and the root's own RSS (statm reads, cheap).
    Every SLOW_POLL_S: rescan /proc for descendants and sum their PSS (the costly part, kept
    rare so the sampler takes little CPU from the run it measures).
    """

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.rss_peak, self.pss_peak, self.own_rss_peak = pid, 0, 0, 0
        self._stop_event = threading.Event()

    def run(self):
        pids, last_slow = [self.pid], -float("inf")
        while not self._stop_event.is_set():
            now = time.monotonic()
            if now - last_slow >= SLOW_POLL_S:
                last_slow = now
                pids = descendants(self.pid)
                self.pss_peak = max(self.pss_peak, sum(_pss_bytes(p) for p in pids))
            rss = [_rss_bytes(p) for p in pids]
            self.rss_peak = max(self.rss_peak, sum(rss))
            self.own_rss_peak = max(self.own_rss_peak, rss[0])
            self._stop_event.wait(POLL_S)

    def stop(self):
        self._stop_event.set()
        self.join()


def run_measured(module, argv, cwd, work_dir, tag):
    """Run MODULE.main(argv) in a fresh `python -c CHILD_DRIVER` process; return {rc, wall_s,
    cpu_s (user + system CPU of the child and every process it reaped: audit, figure and
    worker processes), peak_rss_bytes (child's VmHWM), tree_pss_peak_bytes,
    tree_rss_peak_bytes (sampled), timings (sweeplib.base.TIMINGS), log}.

    stdout and stderr go to <work_dir>/<tag>.log. Wall time runs from just before the fork
    to the reaping of the child, so it covers interpreter start-up, imports and shutdown.
    """
    out_path = Path(work_dir) / f"{tag}.json"
    log_path = Path(work_dir) / f"{tag}.log"
    cmd = [sys.executable, "-c", CHILD_DRIVER, str(out_path), module] + list(argv)
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)     # rusage: the child + what it reaped
            proc.returncode = rc = os.waitstatus_to_exitcode(status)
        except BaseException:
            proc.kill()
            proc.wait()
            sampler.stop()
            raise
        wall = time.perf_counter() - t0
        sampler.stop()
    try:
        child = json.loads(out_path.read_text())
    except (OSError, json.JSONDecodeError):
        child = {}
    # VmHWM missing only if the child died before writing it: fall back to the sampled peak
    own = child.get("vmhwm_bytes") or sampler.own_rss_peak
    return {"rc": rc, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_bytes": own,
            "tree_pss_peak_bytes": sampler.pss_peak, "tree_rss_peak_bytes": sampler.rss_peak,
            "timings": child.get("timings", {}), "log": str(log_path)}


def log_tail(path, n=25):
    """Last n lines of a child's log."""
    lines = Path(path).read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])
