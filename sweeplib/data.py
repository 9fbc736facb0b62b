"""The cache: where each dataset's files are, loading and validating them once (labels,
activations, feature ids), input fingerprints, and what the demo marker says.

    datasets, feature_ids, n_features = load_cache(cache_dir, layer, names)

Layout: <cache_dir>/layer_<L>/<stem>_activations.npy (dense) or .npz (scipy.sparse.save_npz;
never both) and <stem>_labels.json|.npy, with the stems and roles of common.DATASETS.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from common import DATASETS, DEMO_MARKER, LABEL_MAP, NPY_CLASS_NAMES, DatasetSpec
from sweeplib import demo, hints
from sweeplib.base import InputError, check_folder, entry_state, open_regular
from sweeplib.config import check_extra_eval_name
from sweeplib.npyio import (HashingReader, activation_shape, dense_to_csr, npy_from_bytes,
                            parse_json, read_small_file)
from sweeplib.npzio import read_sparse, sparse_shape


@dataclass
class Dataset:
    """Activations (CSR float32), binary labels, fine classes, the files they came from and the
    dataset's row of the run's dataset table (spec: role, regime, reference set)."""
    name: str
    X: sp.csr_matrix
    y: np.ndarray
    classes: np.ndarray
    files: dict = field(default_factory=dict)       # role -> path
    n_negative_values: int = 0
    warnings: list = field(default_factory=list)    # data warnings (datacheck.py)
    spec: DatasetSpec | None = None                 # default: common.DATASETS[name]
    fingerprints: dict = field(default_factory=dict)  # role -> fingerprint of the bytes read

    def __post_init__(self):
        if self.spec is None:
            self.spec = DATASETS[self.name]


def dataset_table(extra_eval=()):
    """The run's dataset table: common.DATASETS, then one eval-only dataset per --extra-eval
    name (<name>_activations.npy + <name>_labels.json|.npy, evaluated whole, never trained
    on). The common table itself is never changed."""
    table = dict(DATASETS)
    for name in extra_eval:
        if name in table:
            raise InputError(f"--extra-eval: {name!r} is already a dataset of the experiment")
        check_extra_eval_name(name)
        table[name] = DatasetSpec(name, name, "eval", "extra", None, f"{name} (extra eval set)")
    return table


def eval_names(datasets):
    """Names of the eval sets among loaded datasets: the table's order, then extra sets."""
    evals = [n for n, ds in datasets.items() if ds.spec.role in ("eval", "split")]
    return [n for n in DATASETS if n in evals] + [n for n in evals if n not in DATASETS]


def layer_dir(cache_dir, layer):
    """The folder holding one layer's files."""
    return Path(cache_dir) / f"layer_{layer}"


def dataset_files(cache_dir, layer, spec):
    """(activations path, labels path or None) of a dataset (its DatasetSpec); activations
    may be dense .npy or sparse .npz and labels .npy or .json, never both of a kind (InputError
    naming both: which one holds the truth?). A missing activations file is named as .npy."""
    d = layer_dir(cache_dir, layer)
    stem = spec.stem
    acts = d / f"{stem}_activations.npy"
    sparse = d / f"{stem}_activations.npz"
    if entry_state(sparse, "activations file") is not None:
        if entry_state(acts, "activations file") is not None:
            raise InputError(f"{acts}: two activations files for dataset {spec.name}, "
                             f"{acts.name} (dense) and {sparse.name} (sparse); keep one "
                             "(move the other away)")
        acts = sparse
    found = [d / f"{stem}_labels.{ext}" for ext in ("npy", "json")
             if entry_state(d / f"{stem}_labels.{ext}", "labels file") is not None]
    if len(found) == 2:
        raise InputError(f"{found[0]}: two label files for dataset {spec.name}, {found[0].name} "
                         f"and {found[1].name}; keep one (move the other away)")
    return acts, (found[0] if found else None)


def missing_files(cache_dir, layer, names, table=DATASETS):
    """Paths (as strings) that the given datasets (of the dataset table) need but the cache
    lacks (InputError for one that is there but cannot be used: entry_state)."""
    out = []
    for name in names:
        acts, lab = dataset_files(cache_dir, layer, table[name])
        if entry_state(acts, "activations file") is None:
            out.append(str(acts))
        if lab is None:
            out.append(str(layer_dir(cache_dir, layer) / f"{table[name].stem}_labels.json|.npy"))
    return out


def layout_help(cache_dir, layer, table=DATASETS):
    """Multi-line description of the expected cache layout (printed after a missing-file error)."""
    lines = [f"expected layout under {layer_dir(cache_dir, layer)}/:"]
    for name, d in table.items():
        lab = "json" if d.role == "split" else ("json|.npy" if d.regime == "extra" else "npy")
        lines.append(f"  {d.stem}_activations.npy|.npz  {d.stem}_labels.{lab}   ({name})")
    lines.append(f"no real cache? run: {hints.command('run_all.py', '--demo')}")
    return "\n".join(lines)


def load_labels(path, name):
    """(binary labels int8, fine classes) from a .npy (0/1 or bool) or a .json sidecar."""
    return read_labels(path, name)[:2]


def read_labels(path, name):
    """(binary labels int8, fine classes, fingerprint) of a label file, read once into memory:
    the fingerprint is the one of exactly the bytes the labels come from."""
    path = Path(path)
    what = ".npy file" if path.suffix == ".npy" else "labels JSON"
    raw = read_small_file(path, what)
    fp = {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    return (*_parse_labels(raw, path, name), fp)


def _parse_labels(raw, path, name):
    """(binary labels, fine classes) from a label file's bytes."""
    if path.suffix == ".npy":
        raw = npy_from_bytes(raw, path)
        if raw.ndim != 1:
            raise InputError(f"{path}: labels must be 1-D, got shape {raw.shape}")
        if raw.dtype.kind not in "iub":
            raise InputError(f"{path}: .npy labels must be 0/1 integers or bools, got dtype "
                             f"{raw.dtype}")
        values = set(np.unique(raw).tolist())
        if not values <= {0, 1}:
            raise InputError(f"{path}: .npy labels must be 0/1, found {sorted(values)[:5]}")
        y = raw.astype(np.int8)
        classes = np.where(y == 1, NPY_CLASS_NAMES[1], NPY_CLASS_NAMES[0])
        return y, classes
    doc = parse_json(raw, path, "labels JSON")
    if not isinstance(doc, dict) or not isinstance(doc.get("labels"), list):
        raise InputError(f"{path}: labels JSON must be an object with a 'labels' list")
    labels = doc["labels"]
    y = np.empty(len(labels), dtype=np.int8)
    classes = []
    for i, lab in enumerate(labels):
        if isinstance(lab, bool) or (isinstance(lab, int) and lab in (0, 1)):
            y[i] = int(lab)
            classes.append(NPY_CLASS_NAMES[int(lab)])
        elif isinstance(lab, str) and lab in LABEL_MAP:
            y[i] = LABEL_MAP[lab]
            classes.append(lab)
        else:
            raise InputError(f"{path}: unknown label {lab!r} at index {i} in dataset {name} "
                             f"(known: {', '.join(LABEL_MAP)})")
    return y, np.asarray(classes, dtype=str)


def read_feature_ids(path, n_features):
    """Validated list of feature ids from a JSON file."""
    return read_feature_ids_fp(path, n_features)[0]


def read_feature_ids_fp(path, n_features):
    """(validated feature ids, fingerprint of the bytes they were read from)."""
    path = Path(path)
    raw = read_small_file(path, "feature-ids file")
    ids = _feature_ids(parse_json(raw, path, "feature-ids JSON"), path, n_features)
    return ids, {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


def _feature_ids(ids, path, n_features):
    """The feature ids of a parsed --feature-ids document, validated."""
    if isinstance(ids, dict) and "feature_ids" in ids:
        ids = ids["feature_ids"]
    if not isinstance(ids, list) or not ids:
        raise InputError(f"{path}: feature ids must be a non-empty JSON list of integers")
    bad = [v for v in ids if isinstance(v, bool) or not isinstance(v, int)]
    if bad:
        raise InputError(f"{path}: feature ids must be integers, found {bad[0]!r}")
    out = [v for v in ids if not 0 <= v < n_features]
    if out:
        raise InputError(f"{path}: feature id {out[0]} out of range [0, {n_features})")
    if len(set(ids)) != len(ids):
        dup = next(v for v in ids if ids.count(v) > 1)
        raise InputError(f"{path}: feature id {dup} appears more than once")
    return ids


def _refuse_layer_folder(cache_dir, layer):
    """InputError when --cache-dir names a layer folder (layer_40/, or a folder of
    *_activations.npy files) instead of the cache root above it: the flag that was meant."""
    m = re.fullmatch(r"layer_(\d+)", cache_dir.name)
    if not m and not any(cache_dir.glob("*_activations.npy")):
        return
    flag = f"--cache-dir {hints.pasteable(cache_dir.parent)}"
    if m and int(m.group(1)) != layer:
        flag += f" --layer {m.group(1)}"
    raise InputError(f"{cache_dir}: this is a layer folder, not a cache root (the root holds "
                     f"layer_<L>/ folders); did you mean {flag}?")

def check_present(cache_dir, layer, names, table=DATASETS):
    """InputError naming the first missing (or unusable: base.entry_state) folder or file the
    given datasets need."""
    d = layer_dir(cache_dir, layer)
    layout = layout_help(cache_dir, layer, table)
    if check_folder(cache_dir, "cache directory") is None:
        raise InputError(f"{cache_dir}: cache directory not found\n{layout}")
    if check_folder(d, "layer folder") is None:
        present = sorted(p.name for p in Path(cache_dir).glob("layer_*"))
        if not present:
            _refuse_layer_folder(Path(cache_dir), layer)
        raise InputError(f"{d}: layer folder not found (present: {', '.join(present) or 'none'})"
                         f"\n{layout}")
    missing = missing_files(cache_dir, layer, names, table)
    if missing:
        raise InputError(f"{missing[0]}: missing from the cache"
                         + (f" (and {len(missing) - 1} more: {', '.join(missing[1:])})"
                            if len(missing) > 1 else "")
                         + f"\n{layout}")


def is_sparse(path):
    """Whether an activations file is the sparse (.npz) form."""
    return Path(path).suffix == ".npz"


def activations_shape(path):
    """(rows, features) of a dense or sparse activations file, validated (headers only)."""
    if not is_sparse(path):
        return activation_shape(path)
    shape = sparse_shape(path)
    if shape[1] == 0:
        raise InputError(f"{path}: activations have no features (shape {shape})")
    return shape


def load_activations(path, feature_ids=None, sidecar=None):
    """CSR float32 activations (optionally a column subset) and the negative-value count (of
    the columns used): read_activations without the fingerprint."""
    return read_activations(path, feature_ids, sidecar)[:2]


def read_activations(path, feature_ids=None, sidecar=None):
    """(CSR float32 activations, negative-value count of the columns used, fingerprint of the
    bytes the numbers come from). Dense: with a sidecar store (sidecar.Store) the whole matrix
    comes from its verified sparse sidecar (whose fingerprint is the dense file's sha256,
    hashed now), or is converted and stored there. Sparse (.npz, npzio.py): read once into
    memory, hashed and parsed from those bytes; no sidecar. One rule for every form: the whole
    file is converted and checked, so a non-finite value (or a float64 value beyond float32)
    is refused in any column, also one --feature-ids leaves out."""
    shape = activations_shape(path)
    if shape[0] == 0:
        raise InputError(f"{path}: activations file has no rows")
    cached = None
    if is_sparse(path):
        cached = read_sparse(path)
        if cached[0].shape != tuple(shape):
            raise InputError(f"{path}: the file changed while it was read (shape "
                             f"{cached[0].shape}, {tuple(shape)} a moment before); run again")
    elif sidecar is not None:
        cached = sidecar.load(path, shape, fingerprint)
    if cached is None:
        cached = dense_to_csr(path, shape)
        if sidecar is not None:
            sidecar.save(path, *cached)
    X, n_neg, fp = cached
    if feature_ids is None:
        return X, n_neg, fp
    X = X[:, np.asarray(feature_ids, dtype=np.intp)].tocsr()
    X.sort_indices()
    return X, int(np.count_nonzero(X.data < 0)), fp


def load_cache(cache_dir, layer, names, feature_ids_path=None, warn=print, sidecar=None,
               table=DATASETS):
    """Load the named datasets of the dataset table (dataset_table: with the extra eval sets)
    once; validate shapes, labels and feature counts across files (sidecar: a sidecar.Store of
    sparse copies, or None). Each Dataset's `fingerprints` are those of the bytes it was made
    of (the --feature-ids file's too, under the role 'feature_ids').

    Returns (datasets: dict name -> Dataset, feature_ids list or None, n_features_in_cache).
    """
    check_present(cache_dir, layer, names, table)
    shapes = {name: activations_shape(dataset_files(cache_dir, layer, table[name])[0])
              for name in names}
    n_features = None
    for name, shape in shapes.items():
        if n_features is None:
            n_features, first = shape[1], name
        elif shape[1] != n_features:
            path = dataset_files(cache_dir, layer, table[name])[0]
            raise InputError(f"{path}: {shape[1]} features, but {first} has {n_features}")
    feature_ids, ids_fp = (read_feature_ids_fp(feature_ids_path, n_features)
                           if feature_ids_path else (None, None))
    out = {}
    for name in names:
        acts, lab = dataset_files(cache_dir, layer, table[name])
        y, classes, lab_fp = read_labels(lab, name)
        if len(y) != shapes[name][0]:
            raise InputError(f"{lab}: {len(y)} labels for {shapes[name][0]} rows in {acts.name}")
        X, n_neg, acts_fp = read_activations(acts, feature_ids, sidecar)
        if n_neg:
            warn(f"note: {acts}: {n_neg} negative values (SAE activations are >= 0; "
                 "is this the right file?)")
        files = {"activations": acts, "labels": lab}
        fps = {"activations": acts_fp, "labels": lab_fp}
        if feature_ids_path:
            files["feature_ids"], fps["feature_ids"] = Path(feature_ids_path), ids_fp
        out[name] = Dataset(name, X, y, classes, files, n_neg, spec=table[name],
                            fingerprints=fps)
    return out, feature_ids, n_features


def fingerprint(path):
    """File identity: size and the sha256 of the whole file (about 1.2 GB/s here: 0.35 s for
    the full-size demo cache's 400 MB)."""
    path = Path(path)
    with open_regular(path, "input file") as raw:
        f = HashingReader(raw)
        while f.read(8 << 20):
            pass
    return f.fingerprint()


def input_fingerprints(datasets, feature_ids_path=None, known=None):
    """Fingerprint of every input file the run read: the ones taken of the bytes each dataset
    was made of (Dataset.fingerprints), else (datasets built elsewhere) known ({path:
    fingerprint}) or a fresh hash."""
    known = known or {}
    out = {}
    for ds in datasets.values():
        for role, path in ds.files.items():
            out[str(path)] = (ds.fingerprints.get(role) or known.get(str(path))
                              or fingerprint(path))
    if feature_ids_path and str(feature_ids_path) not in out:
        out[str(feature_ids_path)] = fingerprint(feature_ids_path)
    return out


def ensure_demo_cache(cache_dir, layer, quiet=False):
    """Generate the demo cache at cache_dir unless a complete one is there."""
    if (cache_dir / DEMO_MARKER).exists() and (cache_dir / f"layer_{layer}").is_dir():
        return
    if not quiet:
        print(f"generating synthetic demo cache in {cache_dir} ...", flush=True)
    demo.generate(cache_dir, layers=(layer,), verbose=not quiet)


def data_source(cache_dir):
    """'demo' when the cache carries the demo marker, else 'cache'."""
    return "demo" if (Path(cache_dir) / DEMO_MARKER).exists() else "cache"


def demo_info(cache_dir):
    """The demo generator's settings (seed, scale, width, null mode) from the marker, or None."""
    path = Path(cache_dir) / DEMO_MARKER
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise InputError(f"{path}: unreadable demo marker ({e})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: demo marker must be a JSON object")
    return {k: doc.get(k) for k in ("seed", "scale", "n_features", "null")}
