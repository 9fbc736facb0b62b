"""Reading a results folder without trusting it: only this tool's step files count as steps,
each step's JSON, scores and probe must form one unit (run id and sha256 recorded in the JSON),
and the point metrics the JSON shows are recomputed from the saved scores.

Every problem is an InputError whose first line names the file: readers print one line and
exit 2. Files that are not step files of this tool (`step_9_zzz.json`, a renamed copy whose
record names another step) are ignored with a warning, never shown as steps.
"""
from __future__ import annotations

import hashlib
import io
import math
import re
import stat
import sys
from pathlib import Path

import numpy as np

import joblib

import common
from sweeplib import npyio, owned, results_io, schema, stepfiles
from sweeplib import base, metrics
from sweeplib.base import InputError, entry_state
from sweeplib.hints import command
from sweeplib.metrics import evaluate_set
from sweeplib.probe import fpr_thresholds

STEP_FILE = re.compile(r"^step_(\d+)_(.+)\.json$")
MAX_JSON_BYTES = stepfiles.MAX_RESULT_BYTES
NUMBER = (int, float)
TOLERANCE = 1e-9


def read_json(path, what="JSON file", limit=MAX_JSON_BYTES):
    """A JSON document from a regular file; InputError naming the file for anything else."""
    data = npyio.read_small_file(path, what, limit)
    try:
        return npyio.parse_json(data, path, what)
    except InputError as e:
        raise InputError(str(e).replace(f"malformed {what}", "not valid JSON", 1)) from None


def check_folder(folder):
    """InputError unless folder is an existing directory."""
    folder = Path(folder)
    st = entry_state(folder, "results folder")      # InputError: too long, no access
    if st is None:
        raise InputError(f"{folder}: results folder not found")
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{folder}: not a folder")


def check_not_switching(folder):
    """InputError when a run's switch into folder has started and not finished."""
    for d, rec in results_io.pending_switches(folder):
        state = ("is switching its results in right now; try again" if owned.alive(rec) else
                 "stopped while switching its results in; run any writer on this folder "
                 f"(e.g. {command('run_all.py', '--resume', '--results-dir', Path(folder))}) "
                 "to complete the switch")
        raise InputError(f"{folder}: the run of {owned.describe(rec)} {state} ({d.name})")


def scan(folder):
    """({step number: JSON path}, [ignored path]) of the step-file names in a folder; names
    of steps the tool does not have are ignored."""
    files, ignored = {}, []
    try:
        paths = sorted(Path(folder).glob("step_*_*.json"))
    except OSError:
        return files, ignored
    for path in paths:
        m = STEP_FILE.match(path.name)
        if not m:
            continue
        k = int(m.group(1))
        if k not in common.ALL_STEPS:
            ignored.append((path, f"not a step file of this tool (it has no step {k})"))
        else:
            files.setdefault(k, []).append(path)
    return files, ignored


def read_record(path):
    """A step JSON, checked (schema.STEP_RECORD) for every key the readers use."""
    record = read_json(path, "step record")
    if not isinstance(record, dict):
        raise InputError(f"{path}: not a step record (a JSON {type(record).__name__})")
    schema.check(record, schema.STEP_RECORD, path, "step record")
    return record


def step_records(folder, warn=None):
    """{step number: (path, record)} of a folder's step files. A file whose record names
    another step is ignored (with a warning); two records for one step are refused."""
    warn = warn or (lambda m: print(m, file=sys.stderr))
    files, ignored = scan(folder)
    out = {}
    for path, why in ignored:
        warn(f"warning: {path}: {why}; ignored")
    for k, paths in sorted(files.items()):
        for path in paths:
            record = read_record(path)
            slug = STEP_FILE.match(path.name).group(2)
            if record["step"] != k or record["name"] != slug:
                warn(f"warning: {path}: its record is step {record['step']} "
                     f"({record['name']}), not the file's name; ignored")
                continue
            if k in out:
                raise InputError(f"{folder}: two step records for step {k} "
                                 f"({out[k][0].name}, {path.name}); move one away")
            out[k] = (path, record)
    return out


def _unit_file(folder, json_path, record, key, expected):
    """Path of a step's scores / probe file: always the documented name (a name recorded in
    the JSON is never followed; the sha256 ties the contents to the record)."""
    return Path(folder) / expected


def read_scores(path, record, json_path):
    """Per-sample scores of a step, checked against the record: sha256, run id, structure."""
    data = npyio.read_small_file(path, "scores file", MAX_JSON_BYTES)
    digest = hashlib.sha256(data).hexdigest()
    want = record["files"].get("scores_sha256")
    if want is not None and digest != want:
        raise InputError(f"{path}: sha256 {digest[:12]}... does not match the {str(want)[:12]}"
                         f"... recorded in {Path(json_path).name}; the step's files do not "
                         "belong together")
    return stepfiles.scores_from_npz(data, path, record["run_id"])


def _close(a, b):
    """Equal numbers (within TOLERANCE), or both None / equal non-numbers."""
    if isinstance(a, NUMBER) and isinstance(b, NUMBER) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE)
    return a == b


def _mismatch(saved, fresh, where):
    """Dotted path of the first number in saved that fresh disagrees with, or None."""
    if isinstance(fresh, list):
        if not isinstance(saved, list) or len(saved) != len(fresh):
            return where
        return next((f"{where}[{i}]" for i, (a, b) in enumerate(zip(saved, fresh))
                     if not _close(a, b)), None)
    if isinstance(fresh, dict):
        if not isinstance(saved, dict):
            return where
        for key, value in fresh.items():
            if key.endswith("_note"):
                continue
            bad = _mismatch(saved.get(key), value, f"{where}.{key}")
            if bad:
                return bad
        return None
    return None if _close(saved, fresh) else where


def verify_metrics(json_path, record, scores):
    """Recompute every point metric of the record from the scores; InputError on a mismatch."""
    oof = scores.get("_oof")
    if not oof or "score" not in oof or "label" not in oof:
        raise InputError(f"{json_path}: its scores file lacks the out-of-fold training scores")
    y = np.asarray(oof["label"])
    if len(y) != record["n_training_samples"]:
        raise InputError(f"{json_path}: n_training_samples {record['n_training_samples']} but "
                         f"its scores file holds {len(y)} training rows")
    fresh = fpr_thresholds(np.asarray(oof["score"], dtype=np.float64)[y == 0])
    bad = _mismatch(record["thresholds"]["log_odds"], fresh, "thresholds.log_odds")
    for name, entry in record["evaluation"].items():
        if bad:
            break
        s = scores.get(name)
        if not s or not all(f in s for f in ("score", "label", "class")):
            raise InputError(f"{json_path}: eval set {name} has no scores in its scores file")
        ref_name = entry.get("reference_negatives")
        ref = scores.get(ref_name) if isinstance(ref_name, str) else None
        ref_neg = None if ref is None else ref["score"][ref["label"] == 0]
        again = evaluate_set(np.asarray(s["score"], dtype=np.float64), s["label"],
                             s["class"], record["thresholds"]["log_odds"], ref_neg,
                             ref_name if ref is not None else None)
        bad = _mismatch(entry, again, f"evaluation.{name}")
    if bad:
        raise InputError(f"{json_path}: {bad} does not match what its scores file gives; the "
                         "step's files do not belong together (edited by hand?)")


def load_unit(folder, k, json_path, record):
    """Scores of one step after checking the unit: names, sha256, run id, recomputed metrics."""
    spath = _unit_file(folder, json_path, record, "scores", f"step_{k}_scores.npz")
    ppath = _unit_file(folder, json_path, record, "probe", f"step_{k}_probe.pkl")
    if not spath.exists():
        raise InputError(f"{spath}: missing (its step JSON exists)")
    scores = read_scores(spath, record, json_path)
    if not ppath.exists():
        raise InputError(f"{ppath}: missing (its step JSON exists)")
    _check_probe(ppath, record, json_path)
    verify_metrics(json_path, record, scores)
    want = record["files"].get("record_sha256")
    if want is None:                   # written before digests, or the digest was removed
        verify_intervals(json_path, record, scores)
    elif want != stepfiles.record_digest(record):      # what the scores cannot show
        raise InputError(f"{json_path}: edited after it was written (its contents do not match "
                         "the record_sha256 it carries); rerun the step")
    return scores


UNDIGESTED = ("carries no record_sha256 (written before record digests, or the digest was "
              "removed): its intervals and point metrics are recomputed from the scores, its CV "
              "AUROC, training mix and data warnings cannot be checked; --resume reruns it")


def verify_intervals(json_path, record, scores):
    """The intervals of a record without a digest, recomputed from its scores (closed form)."""
    fresh = {name: dict(entry) for name, entry in record["evaluation"].items()}
    metrics.add_confidence_intervals(fresh, scores, record["thresholds"]["log_odds"])
    for name, entry in record["evaluation"].items():
        if "ci" not in entry:
            continue
        bad = _mismatch(entry["ci"], base.json_safe(fresh[name]["ci"]), f"evaluation.{name}.ci")
        if bad:
            raise InputError(f"{json_path}: {bad} does not match what its scores file gives; "
                             "the step's files do not belong together (edited by hand?)")


def _check_probe(path, record, json_path):
    """The probe file has the sha256 its record names (read, never unpickled)."""
    digest = hashlib.sha256(npyio.read_small_file(path, "probe file", MAX_JSON_BYTES)).hexdigest()
    want = record["files"].get("probe_sha256")
    if want is not None and digest != want:
        raise InputError(f"{path}: sha256 {digest[:12]}... does not match the {str(want)[:12]}"
                         f"... recorded in {Path(json_path).name}; the step's files do not "
                         "belong together")


def probe_matches(folder, k, json_path, record):
    """True when the step's probe file exists and has the sha256 its record names."""
    ppath = _unit_file(folder, json_path, record, "probe", f"step_{k}_probe.pkl")
    try:
        data = npyio.read_small_file(ppath, "probe file", MAX_JSON_BYTES)
    except InputError:
        return False
    return hashlib.sha256(data).hexdigest() == record["files"].get("probe_sha256")


def load_probe(json_path):
    """Load a step's probe after checking its sha256 against the step JSON (trusted-local only)."""
    json_path = Path(json_path)
    record = read_record(json_path)
    probe_path = json_path.parent / f"step_{record['step']}_probe.pkl"
    if record["files"].get("probe") != probe_path.name:
        raise InputError(f"{json_path}: files.probe is not {probe_path.name}")
    data = npyio.read_small_file(probe_path, "probe file", MAX_JSON_BYTES)
    digest = hashlib.sha256(data).hexdigest()
    if digest != str(record["files"].get("probe_sha256")):
        raise InputError(f"{probe_path}: sha256 {digest[:12]}... does not match the "
                         f"{str(record['files'].get('probe_sha256'))[:12]}... recorded in "
                         f"{json_path.name}; refusing to unpickle it")
    return joblib.load(io.BytesIO(data))


def load_folder(folder, warn=None):
    """{step: record}, {step: scores} of a folder, every unit verified (names, sha256, run id,
    recomputed metrics). The readers' one error policy:

    - the folder a command was asked to read (warn=None) must be whole: any problem, or a
      switch pending or starting while it is read, is an InputError (one line, exit 2);
    - a folder shown next to it (warn=a function: the dashboard's other cells) loses only what
      is damaged, each loss one warning line: a step whose files do not form one unit, or the
      whole folder when it cannot be read."""
    try:
        check_folder(folder)
        check_not_switching(folder)
        found = step_records(folder, warn=warn)
    except InputError as e:
        if warn is None:
            raise
        warn(f"{str(e).splitlines()[0]}; folder skipped")
        return {}, {}
    records, scores = {}, {}
    for k, (path, record) in found.items():
        try:
            try:
                scores[k] = load_unit(folder, k, path, record)
            except InputError:
                _check_unchanged(folder, path, record)
                raise
        except InputError as e:
            if warn is None:
                raise
            warn(f"{str(e).splitlines()[0]}; step {k} skipped")
            continue
        if "record_sha256" not in record["files"]:
            (warn or _stderr)(f"warning: {path}: {UNDIGESTED}")
        records[k] = record
    if warn is None:
        check_not_switching(folder)
    return records, scores


def _check_unchanged(folder, path, record):
    """InputError 'the folder changed while it was read' when a step's files failed their
    check because a writer switched new results in meanwhile (its record is no longer the one
    read, or a switch is under way): not damage, a race; reading again gives one run."""
    try:
        now = read_json(path, "step record")
    except InputError:
        now = None
    if now != record or results_io.pending_switches(folder):
        raise InputError(f"{folder}: the folder changed while it was read (a run switched new "
                         "results in); run again") from None


# --------------------------------------------------------------------------------------------
# Control summaries
# --------------------------------------------------------------------------------------------
def _stderr(message):
    """Print a warning line to stderr."""
    print(message, file=sys.stderr)


def _fail(path, what):
    """InputError for a summary file with the wrong shape."""
    raise InputError(f"{path}: not a valid {what}")


def read_transfer(path):
    """transfer_matrix.json checked for what the report, the dashboard and the figures read, or
    None when absent: the one reader of that file."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    doc = read_json(path, "transfer matrix")
    schema.check(doc, schema.TRANSFER, path, "transfer matrix")
    if not doc["train_mixes"] or not doc["eval_sets"]:
        _fail(path, "transfer matrix ('train_mixes' and 'eval_sets' must not be empty)")
    for mix, cell in doc["cells"].items():
        if "note" in cell:
            schema.check(cell, schema.TRANSFER_NOTE, path, "transfer matrix", f"cells.{mix}")
            continue
        for ev in doc["eval_sets"]:
            if ev in cell:
                schema.check(cell[ev], schema.TRANSFER_CELL, path, "transfer matrix",
                             f"cells.{mix}.{ev}")
    return doc


def read_grid(path):
    """grid_summary.json checked for what the report reads, or None when absent."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    doc = read_json(path, "grid summary")
    schema.check(doc, schema.GRID, path, "grid summary")
    return doc


def check_controls(folder, skip=()):
    """Before a run writes into folder: every control folder it does not rewrite must stay
    readable (the analysis of folder reads them). InputError naming the damaged file."""
    folder = Path(folder)
    if "transfer" not in skip:
        read_transfer(folder / "transfer_matrix.json")
    if "grid" not in skip:
        read_grid(folder / "grid_summary.json")
    subs = [folder / n for n in ("arm_budget", "baseline_format")]
    if (folder / "orderings").is_dir():
        subs += sorted(p for p in (folder / "orderings").iterdir() if p.is_dir())
    for sub in subs:
        if sub.name in skip or sub.parent.name in skip or not scan(sub)[0]:
            continue
        try:
            load_folder(sub)
        except InputError as e:
            raise InputError(f"{e}\n(the analysis of {folder} reads {sub.name}/; repair or move "
                             "it before running)") from None
