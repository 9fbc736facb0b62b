"""The three files of a step: its JSON record, its per-sample scores (npz) and its probe
(pickle), with one naming scheme; how they are written and the scores read back.

    step_<k>_<slug>.json   the record (the commit point, written last)
    step_<k>_scores.npz    '<set>__<field>' arrays: eval sets start with a letter, the tool's own
                           entries ('_oof', '_coef', '_probe') with '_', so no set can
                           overwrite them; '_probe__*' is the probe itself (LinearProbe)
    step_<k>_probe.pkl     the fitted pipeline (joblib; trusted-local only)
"""
from __future__ import annotations

import hashlib
import io
import json
import platform
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import scipy

from sweeplib.base import InputError, atomic_write
from sweeplib.npyio import read_small_file

SCHEMA_VERSION = 1
MAX_RESULT_BYTES = 256 * 1024 * 1024       # largest step JSON, scores or probe file read


def output_paths(results_dir, step):
    """The three files of one step: JSON record, per-sample scores, probe."""
    results_dir = Path(results_dir)
    return {"json": results_dir / f"step_{step.number}_{step.slug}.json",
            "scores": results_dir / f"step_{step.number}_scores.npz",
            "probe": results_dir / f"step_{step.number}_probe.pkl"}


def versions():
    """Versions of the packages that produce the numbers."""
    import sklearn
    return {"python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
            "joblib": joblib.__version__}


def scores_to_npz_bytes(scores, run_id):
    """Serialize per-sample scores (flat keys '<set>__<field>') to npz bytes."""
    arrays = {"run_id": np.array(run_id)}
    for name, fields in scores.items():
        for key, arr in fields.items():
            arr = np.asarray(arr)
            arrays[f"{name}__{key}"] = arr.astype(str) if arr.dtype.kind in "OU" else arr
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def save_step(results_dir, step, record, scores, pipe, run_id):
    """Write scores, probe, then the JSON record (the commit point), each atomically."""
    paths = output_paths(results_dir, step)
    npz_bytes = scores_to_npz_bytes(scores, run_id)
    atomic_write(paths["scores"], npz_bytes)
    buf = io.BytesIO()
    joblib.dump({"pipeline": pipe, "feature_ids": record["config"].get("feature_ids"),
                 "config": record["config"], "run_id": run_id, "step": step.number}, buf)
    probe_bytes = buf.getvalue()
    atomic_write(paths["probe"], probe_bytes)
    record["files"] = {"scores": paths["scores"].name, "probe": paths["probe"].name,
                       "probe_sha256": hashlib.sha256(probe_bytes).hexdigest(),
                       "scores_sha256": hashlib.sha256(npz_bytes).hexdigest()}
    record["files"]["record_sha256"] = record_digest(record)
    atomic_write(paths["json"], (json.dumps(record, indent=2) + "\n").encode())
    return paths


def record_digest(record):
    """sha256 of a step record without its own digest (files.record_sha256), over a canonical
    JSON form: a record edited after it was written no longer matches it."""
    files = {k: v for k, v in record.get("files", {}).items() if k != "record_sha256"}
    canon = json.dumps({**record, "files": files}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


@dataclass(frozen=True)
class LinearProbe:
    """A step's probe read from its scores file, without unpickling anything: the same
    float64 log-odds as the pickled pipeline (probe.decision)."""
    weights: np.ndarray          # per feature, in input units
    intercept: float
    scale: np.ndarray            # the StandardScaler's scale_ (weights * scale: standardized)
    feature_ids: np.ndarray      # cache columns the weights belong to, in order

    @classmethod
    def from_scores(cls, scores):
        """The probe in the '_probe' entry of load_scores(...) (files written since it exists)."""
        p = scores["_probe"]
        return cls(np.asarray(p["weights"], dtype=np.float64), float(p["intercept"][0]),
                   np.asarray(p["scale"], dtype=np.float64), np.asarray(p["feature_ids"]))

    def decision(self, X):
        """Log-odds of every row of X (its columns: feature_ids, in order); >= 0 means AF."""
        return np.asarray(X @ self.weights, dtype=np.float64).ravel() + self.intercept


def load_scores(path, run_id=None):
    """Per-sample scores back as {set: {field: array}}; checks the run id when given."""
    return scores_from_npz(read_small_file(path, "scores file", MAX_RESULT_BYTES), path, run_id)


def scores_from_npz(data, path, run_id=None):
    """{set: {field: array}} from the bytes of a scores file (never unpickled); InputError when
    they are unreadable or, with run_id, belong to another run."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            saved = str(z["run_id"]) if "run_id" in z.files else None
            arrays = {key: z[key] for key in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise InputError(f"{path}: unreadable scores file ({str(e)[:120] or type(e).__name__})"
                         ) from None
    if run_id is not None and saved != run_id:
        raise InputError(f"{path}: scores belong to run {saved}, the step JSON to run {run_id}")
    return split_keys(arrays)


def split_keys(arrays):
    """{set: {field: array}} from flat npz keys '<set>__<field>' (set names may hold '__')."""
    out = {}
    for key, value in arrays.items():
        if "__" in key:
            name, fld = key.rsplit("__", 1)
            out.setdefault(name, {})[fld] = value
    return out
