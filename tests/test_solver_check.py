"""--tol, the per-fit solver record and the --solver-check control (solver_check.py)."""
import json

import pytest

from sweeplib import analysis
import run_all
from sweeplib import solver_check, verdict
from conftest import FAST_FLAGS
from sweeplib import render
from sweeplib import report


def step_json(folder, k):
    """A step's JSON record."""
    return json.loads(next(folder.glob(f"step_{k}_*.json")).read_text())


@pytest.fixture(scope="module")
def checked(tiny_cache, tmp_path_factory):
    """Steps 0 and 3 with the solver-sensitivity control."""
    out = tmp_path_factory.mktemp("solver")
    assert run_all.main(["--cache-dir", str(tiny_cache), "--results-dir", str(out), "--steps",
                         "0", "3", "--solver-check", *FAST_FLAGS]) == 0
    return out


def test_every_fit_records_where_it_stopped(checked):
    rec = step_json(checked, 3)
    assert rec["config"]["tol"] == 1e-4
    fits = [rec["solver"]["final"]] + rec["solver"]["cv_folds"]
    assert len(fits) == rec["config"]["cv_folds"] + 1
    assert [f["n_iter"] for f in fits] == [rec["n_iter"]] + rec["cv_n_iter"]
    for f in fits:
        assert f["tol"] == 1e-4 and f["stop"] == solver_check.STOP_GRADIENT and f["converged"]
        assert f["max_abs_gradient"] <= 1e-4
        assert f["dual_bound"] <= f["objective"]
        assert f["duality_gap"] == pytest.approx(f["objective"] - f["dual_bound"])


def test_solver_check_refits_at_a_tight_tolerance_and_reports_it(checked):
    tight, main = step_json(checked / solver_check.FOLDER, 3), step_json(checked, 3)
    assert tight["config"]["tol"] == solver_check.CHECK_TOL
    assert tight["config"]["max_iter"] >= solver_check.CHECK_MAX_ITER
    assert tight["n_iter"] > main["n_iter"]
    assert tight["solver"]["final"]["objective"] <= main["solver"]["final"]["objective"]
    assert tight["solver"]["final"]["relative_gap"] < 1e-3
    a = analysis.analyze(checked)
    s = analysis.solver_summary(a)
    assert s["check"]["verdict"] == a.verdict["outcome"]
    assert set(s["check"]["excess"]) == {0, 3} and min(s["check"]["excess"].values()) >= 0
    text = render.render_text(report.build_sections(a))
    assert "Solver: how far each fit stopped from its optimum" in text
    assert "Verdict at the default tolerance" in text
    assert ("(unchanged)" in text) != ("(CHANGES)" in text)
    assert (checked / "report.txt").read_text().count("Solver check (solver_check/)") == 1


def test_tol_must_be_positive(tiny_cache, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run_all.main(["--cache-dir", str(tiny_cache), "--results-dir", str(tmp_path), "--tol",
                      "0"])
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith("error: argument --tol: must be > 0")
    assert not list(tmp_path.iterdir())


def test_the_verdict_must_survive_the_solver_check(checked):
    a = analysis.analyze(checked)
    check = analysis.solver_summary(a)["check"]
    premise = [p for p in a.verdict["premises"] if p["name"] == "verdict_survives_solver_check"]
    assert len(premise) == 1
    assert premise[0]["passed"] == (check["verdict"] == check["tight_verdict"])
    assert a.verdict["solver_check"]["tight_outcome"] == check["tight_verdict"]
    if not premise[0]["passed"]:
        assert a.verdict["outcome"] == "inconclusive"
    assert a.findings[0].startswith("premise ")        # premises first, the solver's included
    assert any("verdict_survives_solver_check" in f for f in a.findings)


def test_a_verdict_that_changes_with_the_tolerance_is_inconclusive(checked):
    a = analysis.analyze(checked)
    v = verdict.decide(a, verdict.Criteria(min_base_auroc=0.0))
    before = v["outcome"]
    other = "no_improvement" if before != "no_improvement" else "diversity_helps"
    check = {"tol": 1e-8, "verdict": before, "tight_verdict": other, "tight_converged": True}
    verdict.apply_solver_check(v, check)
    assert v["outcome"] == "inconclusive"
    assert v["premises"][-1] == {"name": "verdict_survives_solver_check", "passed": False,
                                 "detail": f"{before} at the default tolerance, {other} with "
                                           "every fit run to tol 1e-08"}
    assert v["reasons"][0].startswith("premise failed: verdict_survives_solver_check")
    assert v["next_steps"] == verdict.NEXT_STEPS["inconclusive"]
    same = verdict.decide(a, verdict.Criteria(min_base_auroc=0.0))
    verdict.apply_solver_check(same, {**check, "tight_verdict": same["outcome"]})
    assert same["outcome"] == before and same["premises"][-1]["passed"]


def test_the_tight_verdict_uses_the_same_criteria(checked):
    """On the tiny cache the default criteria leave the tight fits inconclusive (gold_106
    cannot be bounded within 0.02); a tolerance of 1 lets them conclude."""
    loose = verdict.Criteria(gold_tolerance=1.0, min_base_auroc=0.0)
    a = analysis.analyze(checked, criteria=loose)
    assert analysis.solver_summary(a)["check"]["tight_verdict"] != "inconclusive"
    default = analysis.analyze(checked)
    assert analysis.solver_summary(default)["check"]["tight_verdict"] == "inconclusive"
