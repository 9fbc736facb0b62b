"""Reading a results folder (results_read.py) while a writer switches new results in."""
import json
import shutil

import pytest

from sweeplib import analysis, results_read
from sweeplib.base import InputError


def test_a_switch_while_the_folder_is_read_says_run_again(tiny_run, tmp_path, monkeypatch):
    """Issue 21: a reader that had read step 0's record when a writer switched new results in
    said 'sha256 ... the step's files do not belong together' for a folder that is fine."""
    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    real = results_read.load_unit

    def switched(f, k, path, record):
        if k == 0:                             # the writer's switch lands now
            new = json.loads(path.read_text())
            new["run_id"] = "a-newer-run"
            path.write_text(json.dumps(new))
            shutil.copy(folder / "step_1_scores.npz", folder / "step_0_scores.npz")
        return real(f, k, path, record)
    monkeypatch.setattr(results_read, "load_unit", switched)
    with pytest.raises(InputError, match=rf"^{folder}: the folder changed while it was read "
                                         r"\(a run switched new results in\); run again$"):
        analysis.analyze(folder)


def test_damage_is_still_named_as_damage(tiny_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    shutil.copy(folder / "step_1_scores.npz", folder / "step_0_scores.npz")
    with pytest.raises(InputError, match="step_0_scores.npz: sha256 .* do not belong together"):
        analysis.analyze(folder)
