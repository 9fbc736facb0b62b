"""Ctrl-C before a command's own handlers are in place: one line and exit code 130, not a
traceback out of the middle of an import.

Each top-level script runs `from sweeplib import interrupt; interrupt.install()` first, before
it imports numpy, scipy or scikit-learn (about 0.65 s of imports). The command's body later
runs under results_io.run_cli, whose own handlers (the one-line message saying what was kept,
exit 130 / 143) replace this one and give it back afterwards. Standard library only.
"""
from __future__ import annotations

import os
import signal
import sys

EXIT_CODE = 130                # 128 + SIGINT, as run_cli and shells report it


def install():
    """Make SIGINT print one line and exit 130 (from the main thread only)."""
    signal.signal(signal.SIGINT, _exit_on_interrupt)


def _exit_on_interrupt(signum, frame):
    """Say so on one line and leave at once: nothing has been (or is being) written."""
    try:
        sys.stdout.flush()
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
    finally:
        os._exit(EXIT_CODE)
