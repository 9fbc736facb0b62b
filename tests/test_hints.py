"""hints.py: the commands the tool prints name the interpreter that runs, paths as the current
folder reaches them, and the flags a run was given."""
import os
import sys
from pathlib import Path

from sweeplib import hints
from conftest import ROOT


def fake_python(folder, name="python"):
    """An executable file standing in for an interpreter."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / name
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return exe


def test_an_interpreter_inside_the_current_folder_is_shown_relative(tmp_path, monkeypatch):
    exe = fake_python(tmp_path / ".venv" / "bin")
    monkeypatch.setattr(sys, "executable", str(exe))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(tmp_path)
    assert hints.command("run_all.py", "--demo") == \
        f".venv/bin/python {ROOT / 'run_all.py'} --demo"
    monkeypatch.chdir(ROOT)
    assert hints.command("run_all.py").endswith(" run_all.py")       # the script as typed here


def test_an_interpreter_on_path_is_its_name_but_never_a_look_alike(tmp_path, monkeypatch):
    venv = fake_python(tmp_path / "venv" / "bin")
    system = tmp_path / "usr" / "bin"
    system.mkdir(parents=True)
    os.symlink(venv, system / "python3")        # the system python a venv's python points to
    monkeypatch.setattr(sys, "executable", str(venv))
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PATH", str(system))     # not activated: python3 is another file
    assert hints.command("run_all.py").split()[0] == str(venv)
    monkeypatch.setenv("PATH", f"{venv.parent}:{system}")         # activated
    assert hints.command("run_all.py").split()[0] == "python"


def test_paths_and_words_are_quoted_for_the_shell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = hints.command("generate_report.py", "--results-dir", tmp_path / "my results")
    assert line.endswith(" --results-dir 'my results'")
    assert hints.command("x.py", "--results-dir", Path("/elsewhere/r")).endswith("/elsewhere/r")


def test_the_rerun_command_keeps_every_flag_but_the_steps():
    argv = ("--steps", "0", "1", "--demo", "-C", "1", "--jobs", "-1", "--steps=2")
    line = hints.rerun_command(argv, {3, 0, 1})
    assert line.split(" ", 2)[2] == "--steps 0 1 3 --demo -C 1 --jobs -1"


def test_flags_of_a_record_reproduce_its_config(tmp_path):
    import common
    from sweeplib import config
    argv = ["--cache-dir", str(tmp_path), "-C", "0.1", "--tol", "1e-06", "--dedup-split",
            "--extra-eval", "x", "y", "--source-weight", "equal", "--layer", "16"]
    recorded = config.RunConfig.from_args(config.build_parser("t").parse_args(argv)).record()
    flags = [str(f) for f in hints.flags_of(recorded, "cache")]
    again = config.RunConfig.from_args(config.build_parser("t").parse_args(flags)).record()
    assert again == recorded
    assert hints.flags_of(config.RunConfig(cache_dir=str(common.DEMO_CACHE_DIR)).record(),
                          "demo") == ["--demo"]
