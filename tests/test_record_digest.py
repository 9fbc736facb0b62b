"""A step record carries the sha256 of its own contents: what the scores cannot show (CV AUROC,
data warnings, the training mix ...) edited by hand is refused like a damaged unit."""
import json
import shutil

import pytest

from sweeplib import analysis, base, stepfiles


@pytest.mark.parametrize("edit", [
    lambda r: r.update(cv_auroc_mean=0.999),
    lambda r: r.update(data_warnings=r["data_warnings"] + ["a warning added by hand"]),
    lambda r: r["training_breakdown"]["train"].update(n=1),
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


def _undigested(tiny_run, tmp_path, edit):
    """A copy of the tiny run whose step-2 record lost its digest and was then edited."""
    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    path = next(folder.glob("step_2_*.json"))
    record = json.loads(path.read_text())
    del record["files"]["record_sha256"]
    edit(record)
    path.write_text(json.dumps(record, indent=2))
    return folder, path


@pytest.mark.parametrize("edit", [
    lambda r: r["evaluation"]["gold_106"]["ci"].update(auroc=[0.01, 0.02]),
    lambda r: r["evaluation"]["benchmark"]["ci"].update(accuracy=[0.5, 0.51]),
    lambda r: r["evaluation"]["gold_106"].update(auroc=0.111),
])
def test_without_a_digest_what_the_scores_give_is_recomputed(tiny_run, tmp_path, edit):
    """Issue 21: deleting files.record_sha256 made an edited record read as a pre-digest one
    (an edited interval shown in the dashboard)."""
    folder, path = _undigested(tiny_run, tmp_path, edit)
    with pytest.raises(base.InputError, match=rf"{path.name}: evaluation\.\w+(\.ci\.\w+\[\d\])?"
                                              r"(\.auroc)? does not match what its scores"):
        analysis.analyze(folder)


def test_without_a_digest_the_rest_is_flagged_and_resume_reruns_it(tiny_run, tiny_cache,
                                                                    tmp_path, capsys):
    """Issue 21: an edited CV AUROC 0.111 without the digest was shown with exit 0, no word,
    and kept by --resume."""
    import run_all
    from conftest import FAST_FLAGS
    folder, path = _undigested(tiny_run, tmp_path, lambda r: r.update(cv_auroc_mean=0.111))
    analysis.analyze(folder)
    err = capsys.readouterr().err
    assert f"warning: {path}: carries no record_sha256" in err and "--resume reruns it" in err
    rc = run_all.main(["--cache-dir", str(tiny_cache), "--results-dir", str(folder),
                       "--resume", *FAST_FLAGS])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "carries no record_sha256" in err and "step 2 is rerun" in err
    record = json.loads(path.read_text())
    assert record["cv_auroc_mean"] != 0.111 and "record_sha256" in record["files"]
