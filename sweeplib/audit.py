"""The leakage audit of a run (duplicates.leakage_audit), computed once per inputs and split.

    job = audit.start(datasets, splits, threshold, results_dir, key)   # returns at once
    result, lines = job.result()                                       # waits if need be

The audit depends on the input files, the split (seed, eval fraction, --dedup-split) and the
threshold only. When a step record in the results folder was made from the same inputs and
split (`key`, matched by `cached`), its audit is taken as it is: a repeat run on the same
inputs skips the audit. Otherwise it runs in a daemon thread next to the planning and the fits
(about 1.4 s on the full-size demo; a daemon, so an interrupted run exits at once). A record
that cannot be read, or that differs in anything the audit depends on, is not used.
"""
from __future__ import annotations

import concurrent.futures
import threading
import time

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


def start(datasets, splits, threshold, results_dir=None, want=None):
    """A future of (audit, warning lines): taken from results_dir's records when they hold it
    (see cached), else computed in a daemon thread."""
    job = concurrent.futures.Future()
    found = cached(results_dir, want) if results_dir is not None else None
    if found is not None:
        job.set_result((found, duplicates.audit_warnings(found)))
        return job

    def run():
        """The thread's body: the audit, its lines and how long it took."""
        if not job.set_running_or_notify_cancel():
            return
        t0 = time.perf_counter()
        try:
            lines = []
            result = duplicates.leakage_audit(datasets, splits, threshold, lines.append)
            base.TIMINGS["leakage audit (thread, background)"] = time.perf_counter() - t0
            job.set_result((result, lines))
        except BaseException as e:              # noqa: BLE001 - re-raised by job.result()
            job.set_exception(e)
    threading.Thread(target=run, name="leakage-audit", daemon=True).start()
    return job
