"""A large fresh in-distribution sample of a demo cache (demo_data.py --fresh N): rows drawn
from gold_106's distribution (same feature layout, same signal strength D_GOLD, same class
ratio), never seen by any probe, so that a probe's AUROC on them is its population AUROC up to
a small sampling error (about 0.002 at 20,000 rows). benchmarks/calibration.py scores it with
each step's portable probe to get the true in-distribution change the verdict tried to bound.

    <out>_fresh/layer_<L>/fresh_activations.npy   (n, n_features) float32
    <out>_fresh/layer_<L>/fresh_labels.npy        0/1 int64
    <out>_fresh/FRESH_SAMPLE.json                 the cache's settings and n (written last)

It is written next to the cache, never inside it: the tool loads every *_activations.npy of a
cache folder it knows, and a sample inside would be one more dataset.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sweeplib import demo
from sweeplib.base import InputError, atomic_write

MARKER = "FRESH_SAMPLE.json"
STREAM = 6                         # rng stream of the fresh rows (the datasets use 1-5)
CHUNK = 2048                       # rows generated and written at once


def fresh_dir(cache):
    """The folder of a cache's fresh sample: <cache>_fresh beside it."""
    cache = Path(cache)
    return cache.parent / f"{cache.name}_fresh"


def _chunk(layout, seed, layer, n_features, i, n):
    """(X, y) of chunk i: n rows of gold_106's distribution, gold_106's class ratio."""
    rng = np.random.Generator(np.random.PCG64([int(seed), int(layer), STREAM, int(i)]))
    p_af = demo.GOLD_COUNTS[demo.AF] / sum(demo.GOLD_COUNTS.values())
    y = (rng.random(n) < p_af).astype(float)
    lat = demo._base_latents(rng, n)
    lat["verbosity"] += demo.AF_VERBOSITY * y
    lat["gain"] += demo.AF_GAIN * y
    lat["intent"] = demo._latent(rng, y, demo.D_GOLD)
    lat["negative"] = demo._latent(rng, 1 - y, demo.D_TRAIN_NEG)
    return demo._sample(rng, n, n_features, layout["train"], lat), y.astype(np.int64)


def generate(cache, n, *, seed, n_features, layers, null=None):
    """Write the fresh sample of the demo cache made with these settings; returns its folder."""
    if n < 2:
        raise InputError(f"--fresh: needs at least 2 rows, got {n}")
    out = fresh_dir(cache)
    for layer in layers:
        layout = demo._layout(seed, layer, n_features, null)
        folder = out / f"layer_{layer}"
        folder.mkdir(parents=True, exist_ok=True)
        sizes = [min(CHUNK, n - r) for r in range(0, n, CHUNK)]
        ys = []

        def write(fh):
            """The .npy header, then the rows chunk by chunk."""
            np.lib.format.write_array_header_1_0(
                fh, {"descr": "<f4", "fortran_order": False, "shape": (n, n_features)})
            for i, m in enumerate(sizes):
                X, y = _chunk(layout, seed, layer, n_features, i, m)
                fh.write(np.ascontiguousarray(X, dtype="<f4").tobytes())
                ys.append(y)
        atomic_write(folder / "fresh_activations.npy", write)
        atomic_write(folder / "fresh_labels.npy",
                     lambda fh: np.save(fh, np.concatenate(ys), allow_pickle=False))
    doc = {"synthetic": True, "fresh_sample_of": str(cache), "n": int(n), "seed": int(seed),
           "n_features": int(n_features), "layers": list(layers), "null": null,
           "distribution": "gold_106 (D_GOLD, gold_106's class ratio)"}
    atomic_write(out / MARKER, (json.dumps(doc, indent=1) + "\n").encode())
    return out


def load(cache, layer=demo.DEFAULT_LAYER):
    """(X, y) of a cache's fresh sample (X memory-mapped)."""
    folder = fresh_dir(cache) / f"layer_{layer}"
    if not (fresh_dir(cache) / MARKER).exists():
        raise InputError(f"{fresh_dir(cache)}: no fresh sample (demo_data.py --fresh N)")
    return (np.load(folder / "fresh_activations.npy", mmap_mode="r"),
            np.load(folder / "fresh_labels.npy"))


def probe_scores(probe, X, chunk=CHUNK):
    """Scores of rows X by a portable probe (the scores file's '_probe' arrays):
    X[:, feature_ids] @ weights + intercept."""
    ids, w = np.asarray(probe["feature_ids"]), np.asarray(probe["weights"], dtype=np.float64)
    b = float(np.asarray(probe["intercept"]).ravel()[0])
    return np.concatenate([np.asarray(X[r:r + chunk], dtype=np.float64)[:, ids] @ w + b
                           for r in range(0, len(X), chunk)])
