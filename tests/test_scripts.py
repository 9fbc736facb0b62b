"""Every top-level script run as a script (python X.py), the way users run them: each one
imports, parses its flags and exits cleanly; the readers work on a results folder."""
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPTS = sorted(p.name for p in ROOT.glob("*.py") if p.name != "common.py")


def run(*argv, timeout=120):
    """Run a script of the project as a subprocess; (returncode, stdout, stderr)."""
    r = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_runs_as_a_script(script):
    code, out, err = run(ROOT / script, "--help")
    assert code == 0, err
    assert out.startswith("usage: ") and "Traceback" not in err


@pytest.mark.parametrize("fmt", ["txt", pytest.param("html", marks=pytest.mark.slow)])
def test_generate_report_runs_as_a_script(tiny_run, tmp_path, fmt):
    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    code, out, err = run(ROOT / "generate_report.py", "--results-dir", folder, "--format", fmt,
                         "--no-figures")
    assert code == 0, err
    written = folder / ("dashboard.html" if fmt == "html" else "report.txt")
    assert out.startswith("wrote ") and str(written) in out
    assert written.stat().st_size > 1000 and (folder / "verdict.json").exists()


def test_compare_only_prints_and_writes_nothing(tiny_run, tmp_path, capsys):
    import run_all
    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert run_all.main(["--results-dir", str(folder), "--compare-only"]) == 0
    assert "Training progression" in capsys.readouterr().out
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}
    assert after == before


def test_a_relative_and_an_absolute_cache_path_are_the_same_inputs(tiny_cache, tmp_path,
                                                                   monkeypatch, capsys):
    import run_all
    monkeypatch.chdir(tiny_cache.parent)
    out = tmp_path / "run"
    flags = ["--results-dir", str(out), "--steps", "0", "1", "--quiet", "--jobs", "1"]
    assert run_all.main(["--cache-dir", tiny_cache.name] + flags) == 0
    capsys.readouterr()
    assert run_all.main(["--cache-dir", str(tiny_cache), "--resume", "--steps", "0", "1", "2",
                         "--results-dir", str(out), "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "step 0 base: up to date, skipped" in printed          # not refitted
    assert "step 1 add_sycophant: up to date, skipped" in printed
    assert "step 2 add_organisms: 6 fits done" in printed          # and mixed with them
