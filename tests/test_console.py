"""The console is best effort (console.py): output that cannot be printed never costs results
or ends in a traceback, and what is printed carries no raw control characters."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from sweeplib import console


def _script(*argv, stdout, extra_shell=""):
    """Run a script of the project with stdout redirected as given; (rc, stderr)."""
    cmd = " ".join([sys.executable, *map(str, argv)])
    p = subprocess.run(["bash", "-c", f"{cmd} {stdout} {extra_shell}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    return p.returncode, p.stderr


@pytest.mark.parametrize("stdout", ["| (exec <&-; sleep 3); exit ${PIPESTATUS[0]}",
                                    ">/dev/full", ">&-"])
def test_output_that_cannot_be_printed_keeps_the_results(tiny_run, tmp_path, stdout):
    """Issue 21: `| head -1`, stdout at /dev/full, stdout closed: BrokenPipeError / ENOSPC /
    'NoneType' has no attribute 'flush' tracebacks, exit 1, the whole run's results lost."""
    rc, err = _script("compare_all_steps.py", "--results-dir", tiny_run, stdout=stdout)
    assert rc == 0 and "Traceback" not in err, err
    assert "note: console output was cut short (stdout: " in err


@pytest.mark.slow
@pytest.mark.parametrize("stdout", ["| (exec <&-; sleep 3); exit ${PIPESTATUS[0]}",
                                    ">/dev/full", ">&-"])
def test_a_report_is_written_whatever_stdout_is(tiny_run, tmp_path, stdout):
    out = tmp_path / "r.txt"
    rc, err = _script("generate_report.py", "--results-dir", tiny_run, "--no-figures",
                      "--output", out, stdout=stdout)
    assert rc == 0 and "Traceback" not in err and out.read_text().strip(), err


@pytest.mark.slow
@pytest.mark.parametrize("quiet", [[], ["--quiet"]])
def test_a_run_with_stdout_closed_writes_every_result(tiny_cache, tmp_path, quiet):
    out = tmp_path / "r"
    rc, err = _script("run_all.py", "--cache-dir", tiny_cache, "--results-dir", out,
                      "--jobs", "1", "--steps", "0", *quiet, stdout=">&-")
    assert rc == 0 and "Traceback" not in err, err
    assert (out / "step_0_base.json").is_file() and (out / "report.txt").is_file()


def test_control_characters_and_undecodable_bytes_are_shown_escaped(capsys):
    """Issue 21: ESC sequences in a path were written raw into console warnings."""
    with console.guarded() as streams:
        print("warning: /tmp/a\x1b[2J\x1b]0;owned\x07b\udcff: x\ty")
    out = capsys.readouterr().out
    assert out == "warning: /tmp/a\\x1b[2J\\x1b]0;owned\\x07b\\xff: x\ty\n"
    assert streams.lost is None


def test_an_encoding_the_text_does_not_fit_is_escaped_not_fatal(tmp_path):
    code = ("import sys; sys.path.insert(0, '.'); from sweeplib import console\n"
            "with console.guarded() as s:\n    print('caf\\u00e9 \\u2192 ok')\n"
            "print(s.lost)")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       env={**os.environ, "PYTHONIOENCODING": "ascii", "LC_ALL": "C"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == "caf\\xe9 \\u2192 ok\nNone\n"
