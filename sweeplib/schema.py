"""The shape of every result file a reader trusts, checked once at read time: a step record,
transfer_matrix.json and grid_summary.json. A small declarative validator (stdlib only):

    check(doc, STEP_RECORD, path, "step record")   # InputError naming the file and the field

A spec is a Python type (or a tuple of types; bool never passes for a number), a dict of
key -> spec (extra keys allowed; Opt(spec) marks a key that may be absent), [spec] for a list
of items, Map(spec) for an object with any keys, Null(spec) for a value that may be null, or
Finite() for a finite number. The specs below list what the readers (compare, report,
dashboard, figures, --resume) read; other keys are left alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sweeplib.base import InputError

NUMBER = (int, float)


@dataclass(frozen=True)
class Opt:
    """A key that may be absent (checked when present)."""
    spec: object


@dataclass(frozen=True)
class Null:
    """A value that may be null."""
    spec: object


@dataclass(frozen=True)
class Map:
    """An object with any keys, every value of the spec."""
    spec: object


@dataclass(frozen=True)
class Finite:
    """A finite number (not bool)."""


def _type_ok(value, kind):
    """isinstance without letting a bool pass for a number."""
    if isinstance(value, bool):
        return kind is bool or (isinstance(kind, tuple) and bool in kind)
    return isinstance(value, kind)


def _name(value):
    """A JSON type name of a value."""
    return {dict: "object", list: "list", str: "string", bool: "bool", int: "number",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def check(doc, spec, path, what, where=""):
    """InputError naming path and the first field of doc that does not fit spec."""
    bad = _first_bad(doc, spec, where)
    if bad is None:
        return
    field, why = bad
    if why is None:
        raise InputError(f"{path}: not a valid {what} (lacks '{field}')")
    if not field:
        raise InputError(f"{path}: not a valid {what} (a JSON {why.split(';')[0]})")
    raise InputError(f"{path}: '{field}' has the wrong type ({why})")


def _first_bad(value, spec, where):
    """(dotted field, why) of the first mismatch, or None."""
    if isinstance(spec, Null):
        return None if value is None else _first_bad(value, spec.spec, where)
    if isinstance(spec, Finite):
        ok = _type_ok(value, NUMBER) and math.isfinite(value)
        return None if ok else (where, f"{_short(value)}; expected a finite number")
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return where, f"{_short(value)}; expected an object"
        for key, sub in spec.items():
            opt = isinstance(sub, Opt)
            if key not in value:
                if opt:
                    continue
                return f"{where}.{key}".lstrip("."), None
            bad = _first_bad(value[key], sub.spec if opt else sub, f"{where}.{key}".lstrip("."))
            if bad:
                return bad
        return None
    if isinstance(spec, Map):
        if not isinstance(value, dict):
            return where, f"{_short(value)}; expected an object"
        for key, item in value.items():
            bad = _first_bad(item, spec.spec, f"{where}.{key}".lstrip("."))
            if bad:
                return bad
        return None
    if isinstance(spec, list):
        if not isinstance(value, list):
            return where, f"{_short(value)}; expected a list"
        for i, item in enumerate(value):
            bad = _first_bad(item, spec[0], f"{where}[{i}]")
            if bad:
                return bad
        return None
    if not _type_ok(value, spec):
        want = "a number" if spec is NUMBER else f"a {_name(spec())}"
        return where, f"{_short(value)}; expected {want}"
    return None


def _short(value):
    """A value as a message shows it: its JSON type, and for a scalar the value (short)."""
    if isinstance(value, (dict, list)) or value is None:
        return _name(value)
    return f"{_name(value)} {str(value)[:20]!r}"


# --------------------------------------------------------------------------------------------
# The file kinds
# --------------------------------------------------------------------------------------------
NUM = Null(NUMBER)
FIT = {"n_iter": int, "converged": Opt(bool), "stop": Opt(Null(str)), "tol": Opt(NUM),
       "objective": Opt(NUM), "dual_bound": Opt(NUM), "duality_gap": Opt(NUM),
       "relative_gap": Opt(NUM), "max_abs_gradient": Opt(NUM)}
INTERVAL = Null([NUM])
EVAL_ENTRY = {"n_samples": Opt(int), "af_samples": Opt(int), "auroc": Opt(NUM),
              "reference_negatives": Opt(Null(str)), "ci": Opt(Map(INTERVAL)),
              "per_class": Opt(Map(dict)), "recall_at_fpr": Opt(Map(dict))}
CONFIG = {"seed": int, "C": NUMBER, "penalty": str, "max_iter": int, "eval_fraction": NUMBER,
          "cv_folds": int, "cache_dir": str}
STEP_RECORD = {
    "step": int, "name": str, "run_id": str, "config": CONFIG, "evaluation": Map(EVAL_ENTRY),
    "thresholds": {"log_odds": Map(NUMBER)}, "n_training_samples": int,
    "cv_auroc_mean": NUMBER, "cv_auroc_std": NUMBER, "train_accuracy": NUMBER,
    "converged": bool, "files": {"scores": Opt(str), "probe": Opt(str),
                                 "probe_sha256": Opt(str), "scores_sha256": Opt(str),
                                 "record_sha256": Opt(str)},
    "training_data": Opt([str]), "n_training_af": Opt(int),
    "training_breakdown": Map({"n": int, "af": int, "classes": Opt(Map(int))}),
    "n_features": Opt(int), "n_nonzero_weights": Opt(int),
    "cv_auroc_folds": Opt([NUM]), "cv_n_iter": Opt([int]), "cv_converged": Opt(bool),
    "n_iter": Opt(int),
    "top_features": Opt([{"id": int, "weight": NUMBER}]), "top100_ids": Opt([int]),
    "solver": Opt({"final": FIT, "cv_folds": [FIT]}),
    "repeats": Opt([{"seed": int, "cv_auroc_mean": NUM, "converged": bool,
                     "metrics": Map(Map(NUM)), "oof_train_auroc": Opt(NUM)}]),
    "data_warnings": Opt([str]), "data_source": Opt(Null(str)), "layer": Opt(Null(int)),
    "inputs": Opt(Map({"bytes": Opt(int), "sha256": Opt(str)})),
}

TRANSFER_CELL = {"headline": Opt(Null(str)), "value": Opt(Null(Finite())),
                 "auroc": Opt(NUM), "auroc_vs_reference_negatives": Opt(NUM),
                 "detection_rate": Opt(NUM), "n": Opt(Null(int)), "note": Opt(str)}
TRANSFER_NOTE = {"note": str}
TRANSFER = {"train_mixes": [str], "eval_sets": [str], "cells": Map(dict),
            "training": Opt(Map([str])), "config": Opt(dict), "data_source": Opt(Null(str)),
            "layer": Opt(Null(int)), "inputs": Opt(Map(dict))}

GRID_CELL = {"layer": int, "C": NUMBER, "penalty": str, "cv_auroc": NUMBER,
             "n_nonzero_weights": int, "path": str, "metrics": Map(Map(NUM))}
GRID = {"cells": [GRID_CELL]}
