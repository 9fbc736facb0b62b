"""Shared fixtures: tiny synthetic caches and one tiny sweep, built once per test session."""
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# the per-user sidecar key (sidecar.key_path) of the tests: a private folder, never the user's
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="sweep-test-cache-")
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))     # the simulations shared with calibration.py

import run_all  # noqa: E402
from sweeplib import demo  # noqa: E402

TINY = {"scale": 0.1, "n_features": 256, "seed": 0}
FAST_FLAGS = ["--quiet", "--jobs", "1"]


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """A tiny demo cache (read-only by convention: copy it before changing files)."""
    root = tmp_path_factory.mktemp("cache")
    demo.generate(root, verbose=False, **TINY)
    return root


@pytest.fixture
def cache_copy(tiny_cache, tmp_path):
    """A private copy of the tiny cache that a test may damage."""
    dst = tmp_path / "cache"
    shutil.copytree(tiny_cache, dst)
    return dst


@pytest.fixture(scope="session")
def tiny_run(tiny_cache, tmp_path_factory):
    """Results folder of one full sweep on the tiny cache."""
    out = tmp_path_factory.mktemp("results")
    rc = run_all.main(["--cache-dir", str(tiny_cache), "--results-dir", str(out)] + FAST_FLAGS)
    assert rc == 0
    return out


def write_record(path, record):
    """Write a step record a test forged (another step number, name ...), with the digest a
    record carries recomputed, as if the tool had written it."""
    import json
    from sweeplib import owned, stepfiles
    record["files"]["record_sha256"] = stepfiles.record_digest(record)
    Path(path).write_text(json.dumps(record))
    owned.write_mark(Path(path).parent, Path(path).name, owned.file_sha256(path))


@contextlib.contextmanager
def deadline(seconds):
    """Fail (instead of hanging the suite) when the block takes longer than seconds."""
    def expired(signum, frame):
        raise AssertionError(f"took longer than {seconds} s (deadlock?)")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
