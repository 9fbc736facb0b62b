"""The leakage audit of a run (duplicates.leakage_audit), computed once per inputs and split.

    result, lines = audit.run(datasets, splits, threshold, results_dir, key(ctx))

The audit depends on the input files, the split (seed, eval fraction, --dedup-split) and the
threshold only. When a step record in the results folder was made from the same inputs and
split (`key`, matched by `cached`), its audit is taken as it is: a repeat run on the same
inputs skips the audit. Otherwise it is computed here and now (about 1.4 s on the full-size
demo; in a thread next to the fits it saved no time measurably on two busy cores and held
0.18 GB more at the fits' peak). A record that cannot be read, or that differs in anything the
audit depends on, is not used.
"""
from __future__ import annotations

from sweeplib import base, duplicates, results_read, stepfiles
from sweeplib.base import InputError

CONFIG_KEYS = ("seed", "eval_fraction", "dedup_split", "near_dup_threshold", "feature_ids")


def key(ctx):
    """What the audit of a run depends on, as a step record holds it."""
    config = ctx.cfg.record()
    return {"schema_version": stepfiles.SCHEMA_VERSION, "data_source": ctx.source,
            "layer": ctx.layer, "inputs": ctx.fingerprints,
            "config": {k: config.get(k) for k in CONFIG_KEYS}}


def cached(results_dir, want):
    """The audit of a step record in results_dir made from the same inputs and split (want:
    key()), or None."""
    files, _ = results_read.scan(results_dir)
    for path in sorted(p for paths in files.values() for p in paths):
        try:
            record = results_read.read_record(path)
        except (InputError, OSError):
            continue                                   # damaged or unreadable: not used
        have = {k: record.get(k) for k in want if k != "config"}
        have["config"] = {k: record["config"].get(k) for k in CONFIG_KEYS}
        audit = record.get("leakage_audit")
        if (have == want and isinstance(audit, dict)
                and audit.get("threshold") == want["config"]["near_dup_threshold"]
                and isinstance(audit.get("pairs"), list)):
            return audit
    return None


def run(datasets, splits, threshold, results_dir=None, want=None):
    """(audit, its warning lines): taken from results_dir's records when they hold it (see
    cached), else computed."""
    found = cached(results_dir, want) if results_dir is not None else None
    if found is not None:
        return found, duplicates.audit_warnings(found)
    lines = []
    with base.timed("leakage audit"):
        result = duplicates.leakage_audit(datasets, splits, threshold, lines.append)
    return result, lines
