"""Which files in a results folder the tool may replace or remove: only those it can prove
it wrote, and only inside the results folder (no write or delete follows a symlink out).

Every file the tool writes under one of its names gets an ownership mark first
(owned.write_mark: <folder>/.sweep-owned/<name>, the sha256 of the bytes written). Before any
work a writer checks its results folder and every folder below it (check_ownership): a file
under the tool's names without a mark (the user's own report.txt), a report, dashboard,
verdict or figure whose bytes differ from its mark (edited since), a symlink under a tool name
or a control folder that is a symlink is refused, naming it. A folder written before marks
existed counts as the tool's when one of its step records verifies (its digest); the switch
then marks its files (results_io.Stage).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from sweeplib import base, owned
from sweeplib.base import InputError

DERIVED = base.DERIVED
# the other names of the tool's files in a results folder (base.DERIVED: its derived outputs)
RESULT_FILE = re.compile(r"^(step_\d+_.+\.json|step_\d+_scores\.npz|step_\d+_probe\.pkl|"
                         r"transfer_matrix\.json|grid_summary\.json)$")
CONTROL_DIRS = ("arm_budget", "baseline_format", "orderings", "solver_check", "grid")


def tool_files(folder):
    """Names of the entries of a folder that carry a name of the tool's files."""
    try:
        return sorted(n for n in os.listdir(folder) if n in DERIVED or RESULT_FILE.match(n))
    except OSError:
        return []


def _tool_folder_before_marks(folder):
    """True when a folder without marks holds a step record this tool wrote (its digest, or
    for older records its scores' sha256, verifies): a results folder of an older version."""
    from sweeplib import stepfiles            # (heavy imports: only for unmarked folders)
    for name in tool_files(folder):
        if not (name.startswith("step_") and name.endswith(".json")):
            continue
        try:
            rec = json.loads(Path(folder, name).read_text(encoding="utf-8"))
            files = rec["files"]
            scores = Path(folder) / Path(str(files.get("scores"))).name
            if files.get("record_sha256") == stepfiles.record_digest(rec) or (
                    "record_sha256" not in files
                    and files.get("scores_sha256") == owned.file_sha256(scores)):
                return True
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return False


def unproven(folder, derived_only=False):
    """(path, why) of the first file under the tool's names in folder that the tool cannot
    prove it wrote (owned.py marks: a results file needs its mark, a report, dashboard,
    verdict or figure also the bytes the mark records), or None."""
    folder = Path(folder)
    names = [n for n in tool_files(folder) if n in DERIVED or not derived_only]
    if not names:
        return None
    marks = owned.read_marks(folder)
    if marks is None:
        if _tool_folder_before_marks(folder):
            return None
        marks = {}
    for name in names:
        path = folder / name
        if path.is_symlink():
            return path, "is a symlink"
        if not path.is_file():
            continue                          # a directory in the way: refused elsewhere
        if name not in marks:
            return path, "was not written by this tool (it has no ownership mark)"
        if name in DERIVED and owned.file_sha256(path) != marks[name]:
            return path, "was changed since this tool wrote it"
    return None


def check_ownership(root, derived_only=False):
    """Before any work: InputError naming the first file under the tool's names (in root and
    the folders below it) the tool cannot prove it wrote, or a control folder that is a
    symlink (writes through it would leave the results folder)."""
    root = Path(root)
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        bad = unproven(here, derived_only)
        if bad:
            raise InputError(f"{bad[0]}: {bad[1]}; refusing to replace or remove it (move it "
                             "away, or use another --results-dir)")
        if derived_only:
            return
        rel = here.relative_to(root).parts
        for name in dirnames:
            if os.path.islink(here / name) and (rel or name in CONTROL_DIRS):
                raise InputError(f"{here / name}: is a symlink (-> {os.readlink(here / name)}); "
                                 "refusing to write through it out of the results folder "
                                 "(move it away)")
        dirnames[:] = [n for n in dirnames if not n.startswith(".")]


def check_inside(folder, root):
    """InputError when folder, or a folder between the command's results folder (root) and
    it, is a symlink: no write or delete follows a link out of the results folder."""
    folder = Path(folder)
    if root is None or folder == root:
        return
    try:
        rel = Path(os.path.relpath(folder, root))
    except ValueError:
        rel = Path("..")
    if rel.parts[:1] == ("..",):
        return                                # another results folder of the command
    for i in range(1, len(rel.parts) + 1):
        p = root.joinpath(*rel.parts[:i])
        if p.is_symlink():
            raise InputError(f"{p}: is a symlink (-> {os.readlink(p)}); refusing to write "
                             "through it out of the results folder (move it away)")


def write_owned(path, data):
    """base.atomic_write of a derived output (report, dashboard, verdict, figure), its
    ownership mark first: the tool replaces later only what it can prove it wrote. In a folder
    of an older version (no marks yet) its files are marked as they are first."""
    path = Path(path)
    if path.name in DERIVED:
        try:
            if owned.read_marks(path.parent) is None and _tool_folder_before_marks(path.parent):
                for name in tool_files(path.parent):
                    digest = owned.file_sha256(path.parent / name)
                    if digest:
                        owned.write_mark(path.parent, name, digest)
            owned.write_mark(path.parent, path.name, hashlib.sha256(data).hexdigest())
        except OSError as e:
            reason = e.strerror or str(e)
            raise base.WriteError(f"{path}: cannot write ({reason})", reason) from None
    base.atomic_write(path, data)
