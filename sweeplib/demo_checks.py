"""What the demo generator (demo.py) may do, checked before it writes anything: its settings
(seed, scale, width, layers, the size of the cache they make) and the folder it writes into.

The generator only ever writes into a folder that is absent, empty, or a demo cache it wrote
itself: one holding its marker DEMO_CACHE.json (written last, once the cache is complete) or
its in-progress marker DEMO_CACHE.partial.json (written first; a cache whose generation was
interrupted keeps it, so it can be regenerated). Any other non-empty folder (a real cache,
results, anything) is refused: the generator would overwrite its files.
"""
from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

from common import DEMO_MARKER
from sweeplib.base import InputError, file_kind, shown_path

PARTIAL_MARKER = "DEMO_CACHE.partial.json"   # present while a generation is under way
MAX_SEED = 2 ** 32 - 1
MAX_LAYER = 1000
MAX_BYTES = 8 * 2 ** 30                    # largest cache written (all layers, dense float32)
MARKER_LIMIT = 1 << 20                     # a marker is a few hundred bytes


def _is_generator_marker(path):
    """True when path is a regular file holding the generator's marker (a JSON object with
    "synthetic": true); False when absent or anything else."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode) or os.path.getsize(path) > MARKER_LIMIT:
            return False
        with open(path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get("synthetic") is True


def is_demo_folder(folder):
    """True when folder carries the generator's marker or its in-progress marker."""
    folder = Path(folder)
    return (_is_generator_marker(folder / DEMO_MARKER)
            or _is_generator_marker(folder / PARTIAL_MARKER))


def _nearest_existing(path):
    """The path itself or its nearest existing ancestor (InputError when it cannot be
    looked at)."""
    probe = path
    while True:
        try:
            os.stat(probe)
            return probe
        except FileNotFoundError:
            if probe.parent == probe:
                return probe
            probe = probe.parent
        except OSError as e:
            raise InputError(f"{shown_path(path)}: cannot use it as the demo cache folder "
                             f"({e.strerror})") from None


def check_out(out):
    """InputError ('<out>: ...') unless the generator may write into out: a new folder in a
    writable place, an empty writable folder, or a demo cache it wrote."""
    if not str(out).strip():
        raise InputError("--out: must not be empty")
    out = Path(out)
    where = _nearest_existing(out)
    mode = os.stat(where).st_mode
    if not stat.S_ISDIR(mode):
        kind = file_kind(mode, "a regular file")
        shown = "exists and" if where == out else f"its parent {where}"
        raise InputError(f"{shown_path(out)}: {shown} is {kind}, not a folder; cannot write the "
                         "demo cache there")
    if not os.access(where, os.W_OK | os.X_OK):
        shown = "folder" if where == out else f"its parent {where}"
        raise InputError(f"{shown_path(out)}: {shown} is not writable; cannot write the demo "
                         "cache there")
    if where != out:
        return
    try:
        empty = not os.listdir(out)
    except OSError as e:
        raise InputError(f"{shown_path(out)}: cannot read the folder ({e.strerror})") from None
    if not empty and not is_demo_folder(out):
        raise InputError(f"{shown_path(out)}: folder is not empty and is not a demo cache (no "
                         f"{DEMO_MARKER}); refusing to write the demo cache over its files "
                         "(give a new or empty folder)")


def check_settings(seed, scale, n_features, layers, rows_at, sparse=False, size_width=None):
    """InputError ('--flag: problem') for settings the generator cannot honour. rows_at(scale):
    the rows of one layer at that scale (the size check: dense float32 at size_width features,
    default n_features; sparse: 8 bytes per value, at most one per cell of that width)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InputError(f"--seed: must be an integer in [0, {MAX_SEED}], got {seed}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (
            math.isfinite(scale) and scale > 0):
        raise InputError(f"--scale: must be a finite number > 0, got {scale}")
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
        raise InputError(f"--n-features: must be an integer >= 1, got {n_features}")
    layers = list(layers)
    if not layers:
        raise InputError("--layers: give at least one layer")
    bad = [x for x in layers if isinstance(x, bool) or not isinstance(x, int)
           or not 1 <= x <= MAX_LAYER]
    if bad:
        raise InputError(f"--layers: a layer must be an integer in [1, {MAX_LAYER}], got "
                         f"{bad[0]}")
    n_rows = rows_at(scale)
    width, cell = ((size_width or n_features), 8) if sparse else (n_features, 4)
    size = n_rows * width * cell * len(set(layers))
    if size > MAX_BYTES:
        raise InputError(f"--scale/--n-features: the cache would take about {size / 2**30:.3g} "
                         f"GiB ({n_rows} rows x {n_features} features x {len(set(layers))} "
                         f"layer(s)); the generator writes at most {MAX_BYTES / 2**30:g} GiB "
                         "(lower --scale or --n-features)")
