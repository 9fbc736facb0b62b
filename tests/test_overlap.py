"""Work next to the main line (overlap.py): the figures on request, drawn in a forked process;
the results equal doing the same work in line."""

import pytest

from sweeplib import figures
from sweeplib import overlap
import run_all
from sweeplib import base
from sweeplib import outputs


def _boom(x):
    """Fail in the background."""
    raise base.InputError(f"bad {x}")


def _echo(receive, tag):
    """Return every object received until the inbox closes."""
    got = []
    while (item := receive()) is not None:
        got.append(item)
    return tag, got


@pytest.mark.parametrize("fork", [True, False])
def test_job_returns_the_value_or_reraises_the_error(fork):
    assert overlap.Job(sum, ([1, 2, 3],), {}, fork=fork).result() == 6
    job = overlap.Job(_boom, ("input",), {}, fork=fork)
    with pytest.raises(base.InputError, match="bad input"):
        job.result()
    assert job.mode == ("process" if fork else "thread")


@pytest.mark.parametrize("fork", [True, False])
def test_job_inbox_receives_until_closed(fork):
    job = overlap.Job(_echo, ("t",), {}, fork=fork, inbox=True)
    job.send({"a": 1})
    job.send([2])
    job.close()
    assert job._out is not None or job.mode == "thread"
    assert job.result() == ("t", [{"a": 1}, [2]])


@pytest.mark.slow
def test_figures_only_on_request_and_the_same_bytes(tiny_cache, tmp_path, capsys):
    base = ["--cache-dir", str(tiny_cache), "--steps", "0", "1", "--jobs", "1"]
    assert run_all.main(base + ["--results-dir", str(tmp_path / "plain")]) == 0
    assert not list((tmp_path / "plain").glob("*.png"))
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last == (f"figures: python generate_report.py --results-dir {tmp_path / 'plain'} "
                    "(or run_all.py --figures)")
    assert run_all.main(base + ["--results-dir", str(tmp_path / "fig"), "--figures",
                                "--quiet"]) == 0
    drawn = {p.name: p.read_bytes() for p in (tmp_path / "fig").glob("*.png")}
    assert sorted(drawn) == sorted([figures.SWEEP_FILE, figures.SCORES_FILE])
    in_line = {p.name: p.read_bytes() for p in figures.write_figures(tmp_path / "plain")}
    assert in_line == drawn                    # same numbers, same figures, however drawn


def test_write_outputs_cancels_the_figures_when_the_report_fails(tiny_run, tmp_path,
                                                                monkeypatch):
    from sweeplib import analysis
    a = analysis.analyze(tiny_run)
    job = outputs.start_figures()

    def fail(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(outputs, "write_report", fail)
    with pytest.raises(OSError, match="disk full"):
        outputs.write_outputs(tmp_path, a, figure_job=job)
    if job.mode == "process":                  # stopped and reaped (a thread runs to its end)
        assert job._pid is None and not list(tmp_path.glob("*.png"))
