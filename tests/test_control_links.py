"""A control shown next to the main sweep must come from the main sweep's run: the same input
files, data source, layer and config, but for what the control changes on purpose. One copied
in from another run is left out with a warning (or shown with --allow-mixed)."""
import json
import shutil

import pytest

import run_all
from conftest import FAST_FLAGS, TINY
from sweeplib import analysis, demo

pytestmark = pytest.mark.slow          # three sweeps with controls (~5 s)


def sweep(cache, out, *extra):
    """Steps 0 and 3 with the given controls."""
    assert run_all.main(["--cache-dir", str(cache), "--results-dir", str(out), "--steps", "0",
                         "3", *FAST_FLAGS, *map(str, extra)]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tiny_cache, tmp_path_factory):
    """(main run with its own controls, a run with another seed, a run on another cache)."""
    root = tmp_path_factory.mktemp("links")
    other_cache = root / "cache_b"
    demo.generate(other_cache, verbose=False, **{**TINY, "seed": 1})
    controls = ("--budget", "base", "--transfer", "--solver-check")
    return (sweep(tiny_cache, root / "main", *controls),
            sweep(tiny_cache, root / "seed1", "--seed", 1, *controls),
            sweep(other_cache, root / "cache_b", *controls))


def graft(runs, tmp_path, donor, *names):
    """A copy of the main run whose named controls come from the donor run."""
    out = tmp_path / "grafted"
    shutil.copytree(runs[0], out)
    for name in names:
        src, dst = runs[donor] / name, out / name
        if src.is_dir():
            shutil.rmtree(dst)
            shutil.copytree(src, dst)
        else:
            shutil.copy(src, dst)
    return out


def test_the_controls_of_the_run_itself_are_shown(runs, capsys):
    a = analysis.analyze(runs[0])
    assert set(a.arms) == {"arm_budget"} and a.transfer is not None
    assert analysis.solver_summary(a)["check"] is not None
    assert "not from the main sweep's run" not in capsys.readouterr().err


@pytest.mark.parametrize("donor, why", [(1, "its config 'seed' is 1, the main sweep's 42"),
                                        (2, "it was computed from other input files")])
def test_controls_from_another_run_are_left_out_with_a_warning(runs, tmp_path, capsys,
                                                               donor, why):
    folder = graft(runs, tmp_path, donor, "arm_budget", "transfer_matrix.json", "solver_check")
    capsys.readouterr()
    a = analysis.analyze(folder)
    err = capsys.readouterr().err
    assert a.arms == {} and a.transfer is None
    assert analysis.solver_summary(a)["check"] is None
    assert not any(p["name"] == "verdict_survives_solver_check" for p in a.verdict["premises"])
    for name in ("arm_budget", "transfer_matrix.json", "solver_check"):
        assert (f"warning: {folder / name}: not from the main sweep's run ({why}); not shown"
                in err), err
    mixed = analysis.analyze(folder, allow_mixed=True)
    assert set(mixed.arms) == {"arm_budget"} and mixed.transfer is not None


def test_a_transfer_matrix_without_its_run_is_not_shown(runs, tmp_path, capsys):
    folder = graft(runs, tmp_path, 0)
    doc = json.loads((folder / "transfer_matrix.json").read_text())
    doc["layer"] = 16
    (folder / "transfer_matrix.json").write_text(json.dumps(doc))
    assert analysis.analyze(folder).transfer is None
    assert "its layer is 16, the main sweep's 40" in capsys.readouterr().err
