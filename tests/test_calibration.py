"""pytest tests/test_calibration.py -- the answer's table of benchmarks/calibration.py on
hand-made runs (the runs themselves are the benchmark's, too slow for the suite)."""
import calibration


def _runs(scenario, answers):
    return [{"scenario": scenario, "answer": a} for a in answers]


def test_answer_targets_pass_and_fail_on_the_counts(capsys):
    runs = (_runs("truth method/scale", ["both"] * 8 + ["method", "inconclusive"])
            + _runs("truth data", ["data"] * 9 + ["both"])
            + _runs("null clean", ["neither"] * 10))
    assert calibration.answer_report(runs) is False     # data truth: a method claim in 1/10
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("truth method/scale") and "target" in x)
    assert "method claims  9/10 = 90.0% [55.5%, 99.7%]" in line and line.endswith("(target >= 80%): PASS")
    lines = [line for line in out.splitlines() if line.startswith("truth data") and "target" in line]
    assert [line.split()[-1] for line in lines] == ["PASS", "FAIL"]     # data 9/10, method 1/10
    assert all(line.endswith("PASS") for line in out.splitlines()
               if line.startswith("null clean") and "target" in line)


def test_answer_table_counts_every_answer(capsys):
    runs = _runs("null source", ["neither", "inconclusive", "inconclusive", "data"])
    assert calibration.answer_report(runs) is False     # a data claim in 1/4 under a null
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("null source") and "target" not in line)
    assert row.split()[2:8] == ["4", "1", "0", "0", "1", "2"]   # n, data, method, both, neither, inconclusive


def test_no_answer_key_is_said_and_not_counted(capsys):
    assert calibration.answer_report(_runs("null clean", [None, None])) is True
    assert 'gives no "answer"' in capsys.readouterr().out
