"""One schema check per result file kind (schema.py): a wrong-typed field of a step record
(with its digest recomputed, as a careful forger would) or of transfer_matrix.json ends in one
line naming the file and the field, exit 2, in every reader; never a traceback."""
import json
import shutil

import pytest

import compare_all_steps
import generate_report
from conftest import write_record
from sweeplib import base, results_read, schema

FIELDS = {                                  # issue 21's list of fields readers trusted
    "solver": lambda r, v: r.__setitem__("solver", v),
    "solver.final": lambda r, v: r["solver"].__setitem__("final", v),
    "solver.cv_folds": lambda r, v: r["solver"].__setitem__("cv_folds", v),
    "solver.cv_folds[0]": lambda r, v: r["solver"]["cv_folds"].__setitem__(0, v),
    "top_features": lambda r, v: r.__setitem__("top_features", v),
    "top100_ids": lambda r, v: r.__setitem__("top100_ids", v),
    "repeats": lambda r, v: r.__setitem__("repeats", v),
    "inputs": lambda r, v: r.__setitem__("inputs", v),
    "training_data": lambda r, v: r.__setitem__("training_data", v),
    "training_breakdown": lambda r, v: r.__setitem__("training_breakdown", v),
    "data_warnings": lambda r, v: r.__setitem__("data_warnings", v),
    "evaluation.gold_106.ci": lambda r, v: r["evaluation"]["gold_106"].__setitem__("ci", v),
    "evaluation.gold_106.ci.auroc":
        lambda r, v: r["evaluation"]["gold_106"]["ci"].__setitem__("auroc", v),
}
VALUES = [None, 7, "x", True, {"a": 1}, [1, "a"], [[1]]]
FAST_VALUES = ["x", [1, "a"]]


def _forged(tiny_run, tmp_path, field, value):
    """A copy of the tiny run whose step-2 record has one field replaced (digest recomputed)."""
    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    path = next(folder.glob("step_2_*.json"))
    record = json.loads(path.read_text())
    FIELDS[field](record, value)
    write_record(path, record)
    return folder, path


def _readers(folder, capsys):
    """Exit code and first stderr line of each reader (compare, report txt / md, dashboard)."""
    out = []
    for run in (lambda: compare_all_steps.main(["--results-dir", str(folder)]),
                *(lambda f=f: generate_report.main(["--results-dir", str(folder), "--format", f,
                                                      "--no-figures"])
                  for f in ("txt", "md", "html"))):
        rc = run()
        err = capsys.readouterr().err
        out.append((rc, (err.splitlines() or [""])[0]))
    return out


def _check(tiny_run, tmp_path, capsys, field, value):
    folder, path = _forged(tiny_run, tmp_path, field, value)
    for rc, first in _readers(folder, capsys):
        assert rc in (0, 2), first
        if rc == 2:
            assert first.startswith(f"error: {path}: ") and "\n" not in first, first


@pytest.mark.parametrize("value", FAST_VALUES)
@pytest.mark.parametrize("field", list(FIELDS))
def test_a_wrong_typed_record_field_is_one_line_in_every_reader(tiny_run, tmp_path, capsys,
                                                                field, value):
    _check(tiny_run, tmp_path, capsys, field, value)


@pytest.mark.slow
@pytest.mark.parametrize("value", [v for v in VALUES if v not in FAST_VALUES])
@pytest.mark.parametrize("field", list(FIELDS))
def test_every_wrong_typed_record_field_value(tiny_run, tmp_path, capsys, field, value):
    _check(tiny_run, tmp_path, capsys, field, value)


def test_the_error_names_the_field(tiny_run, tmp_path):
    folder, path = _forged(tiny_run, tmp_path, "solver.cv_folds[0]", {"n_iter": "3"})
    with pytest.raises(base.InputError, match=r"'solver\.cv_folds\[0\]\.n_iter' has the wrong "
                                              r"type \(string '3'; expected a number\)"):
        results_read.read_record(path)


TRANSFER_EDITS = {
    "note_not_an_object": (lambda d, mix, ev: d["cells"].__setitem__(mix, "no probe"),
                           "cells.{mix}"),
    "note_not_a_string": (lambda d, mix, ev: d["cells"].__setitem__(mix, {"note": [1]}),
                          "cells.{mix}.note"),
    "headline_a_list": (lambda d, mix, ev: d["cells"][mix][ev].__setitem__("headline", ["a"]),
                        "cells.{mix}.{ev}.headline"),
    "auroc_a_string": (lambda d, mix, ev: d["cells"][mix][ev].__setitem__("auroc", "0.9"),
                       "cells.{mix}.{ev}.auroc"),
    "value_inf": (lambda d, mix, ev: d["cells"][mix][ev].__setitem__("value", 1e999),
                  "cells.{mix}.{ev}.value"),
}


@pytest.mark.parametrize("case", list(TRANSFER_EDITS))
def test_a_damaged_transfer_matrix_names_the_cell(tmp_path, case):
    """Issue 21: a non-object note cell or a list headline crashed the figures, a string
    auroc blanked the dashboard's transfer section."""
    doc = {"train_mixes": ["a", "b"], "eval_sets": ["gold_106"],
           "cells": {"a": {"note": "one class"},
                     "b": {"gold_106": {"headline": "auroc", "value": 0.9, "auroc": 0.9,
                                        "n": 20}}}}
    path = tmp_path / "transfer_matrix.json"
    path.write_text(json.dumps(doc))
    assert results_read.read_transfer(path) == doc
    edit, field = TRANSFER_EDITS[case]
    edit(doc, "b", "gold_106")
    path.write_text(json.dumps(doc))
    with pytest.raises(base.InputError) as e:
        results_read.read_transfer(path)
    assert str(e.value).startswith(f"{path}: ")
    assert f"'{field.format(mix='b', ev='gold_106')}'" in str(e.value), str(e.value)


def test_specs_accept_what_the_tool_writes(tiny_run):
    for path in sorted(tiny_run.glob("step_*.json")):
        schema.check(json.loads(path.read_text()), schema.STEP_RECORD, path, "step record")
