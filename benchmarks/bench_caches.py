"""The benchmark's demo caches: reuse one made with the same parameters, generate one (in a
measured subprocess) otherwise, and measure its size. Used by bench_sweep.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bench_measure import ChildFailed, log_tail, run_measured

REPO = Path(__file__).resolve().parent.parent
LAYER = 40                              # the sweep's default layer (common.DEFAULTS["layer"])


def demo_marker(cache_dir):
    """The DEMO_CACHE.json of a cache, or None."""
    path = Path(cache_dir) / "DEMO_CACHE.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def density(n_features, sparse):
    """The demo density of a cell: dense cells wider than 16,384 keep the layout they were
    first measured with (proportional); sparse cells have the real density."""
    return "real" if sparse or n_features <= 16384 else "proportional"


def cache_matches(cache_dir, seed, scale, n_features, sparse=False):
    """True when cache_dir holds a complete demo cache made with these parameters."""
    m = demo_marker(cache_dir)
    return (m is not None and m.get("seed") == seed and float(m.get("scale", -1)) == scale
            and m.get("n_features") == n_features and LAYER in m.get("layers", [])
            and m.get("sparse", False) == sparse
            and m.get("density", "real" if n_features <= 16384 else "proportional")
            == density(n_features, sparse)
            and (Path(cache_dir) / f"layer_{LAYER}").is_dir())


def ensure_cache(cache_dir, seed, scale, n_features, work_dir, scratch=False, sparse=False):
    """Reuse or generate (in a measured subprocess) a demo cache (sparse: .npz files at the
    real density); return a description. A cache outside the work dir (scratch=False) without
    DEMO_CACHE.json is never overwritten."""
    cache_dir = Path(cache_dir)
    if cache_matches(cache_dir, seed, scale, n_features, sparse):
        return {"generated": False}
    if (not scratch and (cache_dir / f"layer_{LAYER}").is_dir()
            and demo_marker(cache_dir) is None):
        raise SystemExit(f"error: {cache_dir}: holds layer_{LAYER}/ but no DEMO_CACHE.json "
                         "(not a demo cache); refusing to overwrite it")
    argv = ["--out", str(cache_dir), "--seed", str(seed), "--scale", f"{scale:g}",
            "--n-features", str(n_features), "--layers", str(LAYER), "--quiet",
            "--density", density(n_features, sparse)] + (["--sparse"] if sparse else [])
    print(f"  generating demo cache scale={scale:g} n_features={n_features} in {cache_dir} ...",
          flush=True)
    m = run_measured("demo_data", argv, REPO, work_dir, f"generate_{cache_dir.name}")
    if m["rc"] != 0:
        raise ChildFailed(f"demo generation exited with {m['rc']}; last lines of {m['log']}:\n"
                          + log_tail(m["log"]))
    return {"generated": True, "gen_wall_s": m["wall_s"], "gen_peak_rss_bytes": m["peak_rss_bytes"]}


def cache_size(cache_dir):
    """(rows, features, non-zero activations, bytes of activation files) of one layer."""
    rows = nnz = nbytes = 0
    n_features = None
    for path in sorted((Path(cache_dir) / f"layer_{LAYER}").glob("*_activations.npz")):
        X = sp.load_npz(path)
        n_features = X.shape[1]
        X.sum_duplicates()
        nnz += int(np.count_nonzero(X.data))
        rows += X.shape[0]
        nbytes += path.stat().st_size
    for path in sorted((Path(cache_dir) / f"layer_{LAYER}").glob("*_activations.npy")):
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        n_features = arr.shape[1]
        step = max(1, (64 << 20) // max(1, arr.shape[1] * arr.itemsize))   # ~64 MB per chunk
        for r in range(0, arr.shape[0], step):
            nnz += int(np.count_nonzero(arr[r:r + step]))
        rows += arr.shape[0]
        nbytes += path.stat().st_size
        del arr
    return {"rows": rows, "features": n_features, "nnz": nnz, "bytes": nbytes}
