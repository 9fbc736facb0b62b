"""A step record carries the sha256 of its own contents: what the scores cannot show (CV AUROC,
data warnings, the training mix ...) edited by hand is refused like a damaged unit."""
import json
import shutil

import pytest

from sweeplib import analysis, base, stepfiles


@pytest.mark.parametrize("edit", [
    lambda r: r.update(cv_auroc_mean=0.999),
    lambda r: r.update(data_warnings=r["data_warnings"] + ["a warning added by hand"]),
    lambda r: r["training_breakdown"].update(train=1),
])
def test_a_hand_edited_record_is_refused(tiny_run, tmp_path, edit):
    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    path = next(folder.glob("step_2_*.json"))
    record = json.loads(path.read_text())
    assert record["files"]["record_sha256"] == stepfiles.record_digest(record)
    edit(record)
    path.write_text(json.dumps(record, indent=2))
    with pytest.raises(base.InputError, match=f"{path.name}: edited after it was written"):
        analysis.analyze(folder)


def test_a_record_reformatted_but_unchanged_is_accepted(tiny_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    path = next(folder.glob("step_2_*.json"))
    path.write_text(json.dumps(json.loads(path.read_text()), sort_keys=True))
    assert analysis.analyze(folder).steps == [0, 1, 2, 3]
