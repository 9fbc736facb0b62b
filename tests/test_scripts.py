"""Every top-level script run as a script (python X.py), the way users run them: each one
imports, parses its flags and exits cleanly; the readers work on a results folder."""
import json
import os
import re
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


# --------------------------------------------------------------------------------------------
# A first hour: hints that run as printed, flags as typed, nothing deleted
# --------------------------------------------------------------------------------------------
def run_in(cwd, *argv, env=None, timeout=180):
    """A script of the project run from another folder; (returncode, stdout, stderr)."""
    r = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True,
                       timeout=timeout, cwd=cwd, env=env)
    return r.returncode, r.stdout, r.stderr


def paste(cwd, line, timeout=180):
    """Run a printed command line in a shell whose PATH has no virtualenv (a new terminal)."""
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    env.pop("VIRTUAL_ENV", None)
    r = subprocess.run(line, shell=True, capture_output=True, text=True, timeout=timeout,
                       cwd=cwd, env=env)
    return r.returncode, r.stdout, r.stderr


def test_the_figures_hint_runs_as_printed(tiny_cache, tmp_path):
    code, out, err = run_in(tmp_path, ROOT / "run_all.py", "--cache-dir", tiny_cache,
                            "--results-dir", "res", "--steps", "0", "1", "--jobs", "1")
    assert code == 0, err
    hint = out.rstrip().splitlines()[-1]
    assert hint.startswith("figures: ") and hint.endswith(" (or run_all.py --figures)")
    line = hint[len("figures: "):-len(" (or run_all.py --figures)")]
    assert "--results-dir res" in line and not line.startswith("python ")
    code, out, err = paste(tmp_path, line)
    assert code == 0, err
    assert (tmp_path / "res" / "sweep.png").is_file() and "Traceback" not in err


def test_the_no_cache_hint_names_the_interpreter_that_has_the_packages(tmp_path):
    code, _, err = run_in(tmp_path, ROOT / "00_base_probe.py", "--cache-dir", tmp_path / "none",
                          "--results-dir", tmp_path / "r")
    assert code == 2 and err.startswith(f"error: {tmp_path / 'none'}: cache directory not found")
    hint = next(x for x in err.splitlines() if x.startswith("no real cache? run: "))
    interpreter, script, flag = hint[len("no real cache? run: "):].split()
    assert (script, flag) == (str(ROOT / "run_all.py"), "--demo")
    code, _, err = paste(tmp_path, f"{interpreter} -c 'import joblib, sklearn, scipy'")
    assert code == 0, err                    # a bare 'python' here: ModuleNotFoundError


def test_generate_report_takes_figures_and_writes_a_bare_output_name_into_the_results(
        tiny_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    code, out, err = run_in(tmp_path, ROOT / "generate_report.py", "--results-dir", "run",
                            "--figures", "--output", "mine.txt")
    assert code == 0, err
    assert (folder / "mine.txt").stat().st_size > 1000 and not (tmp_path / "mine.txt").exists()
    assert (folder / "sweep.png").is_file()
    code, _, err = run_in(tmp_path, ROOT / "generate_report.py", "--results-dir", "run",
                          "--no-figures", "--output", "./here.txt")
    assert code == 0, err and (tmp_path / "here.txt").is_file()   # a path: where it says
    code, _, err = run_in(tmp_path, ROOT / "generate_report.py", "--results-dir", "run",
                          "--figures", "--no-figures")
    assert code == 2 and "not allowed with argument" in err.splitlines()[0]


@pytest.mark.parametrize("script,argv,expected", [
    ("run_all.py", ["--cahce-dir", "x"], "unrecognized argument --cahce-dir; did you mean "
                                         "--cache-dir?"),
    ("run_all.py", ["--repeat", "2"], "unrecognized argument --repeat; did you mean --repeats?"),
    ("run_all.py", ["--step", "0", "1"], "unrecognized argument --step; did you mean --steps?"),
    ("00_base_probe.py", ["--steps", "0"], "unrecognized argument --steps: a flag of "
                                           "run_all.py, not of 00_base_probe.py"),
    ("compare_all_steps.py", ["--figures"], "unrecognized argument --figures: a flag of "
                                            "run_all.py and generate_report.py"),
    ("generate_report.py", ["--result-dir", "x"], "did you mean --results-dir?"),
    ("demo_data.py", ["--scal", "2"], "did you mean --scale?"),
])
def test_flags_are_never_abbreviated_and_a_typo_gets_the_flag_it_meant(script, argv, expected,
                                                                       tmp_path):
    code, out, err = run_in(tmp_path, ROOT / script, *argv)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert lines[0].endswith(f"{script} --help)")
    assert not list(tmp_path.iterdir())                        # nothing written


def test_a_layer_folder_given_as_cache_dir_names_the_flag_meant(tiny_cache, tmp_path):
    code, _, err = run_in(tiny_cache, ROOT / "run_all.py", "--cache-dir", "layer_40",
                          "--layer", "16", "--results-dir", tmp_path / "r")
    first = err.splitlines()[0]
    assert code == 2 and first == (f"error: {tiny_cache / 'layer_40'}: this is a layer folder, "
                                   "not a cache root (the root holds layer_<L>/ folders); did "
                                   "you mean --cache-dir . --layer 40?")
    assert not (tmp_path / "r").exists()


def test_a_refused_step_script_prints_a_command_that_reruns_the_steps(tiny_run, tiny_cache,
                                                                      tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    code, out, err = run_in(tmp_path, ROOT / "02_add_organisms.py", "--cache-dir", tiny_cache,
                            "--results-dir", "run", "-C", "1", "--jobs", "1", "--quiet")
    first = err.splitlines()[0]
    assert code == 2 and "this folder keeps step 0 from a run with another 'C'" in first
    line = first[first.index("Rerun those steps too (") + 23:first.index("), or use another")]
    assert "run_all.py --steps 0 1 2 3 " in line and "-C 1" in line
    code, out, err = paste(tmp_path, line)
    assert code == 0, err
    assert {json.loads(p.read_text())["config"]["C"] for p in folder.glob("step_*.json")} == {1.0}


def test_rerunning_one_step_script_refreshes_the_derived_outputs(tiny_run, tiny_cache, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    code, out, err = run_in(tmp_path, ROOT / "01_add_sycophant.py", "--cache-dir", tiny_cache,
                            "--results-dir", "run", "--jobs", "1")
    assert code == 0, err
    assert "removed" not in err and "refreshed from the folder's steps: run/report.txt" in out
    new_run = json.loads((folder / "step_1_add_sycophant.json").read_text())["run_id"]
    assert new_run in json.loads((folder / "verdict.json").read_text())["run_ids"]
    assert new_run in (folder / "dashboard.html").read_text()


def test_the_answer_comes_first_on_the_console_in_the_report_and_alone_under_quiet(tiny_cache,
                                                                                   tmp_path):
    code, out, err = run_in(tmp_path, ROOT / "run_all.py", "--cache-dir", tiny_cache,
                            "--results-dir", "res", "--jobs", "1")
    assert code == 0, err
    lines = out.splitlines()
    first = next(i for i, x in enumerate(lines) if x.startswith("ANSWER: "))
    assert first < lines.index("Training progression") < lines.index("Findings and verdict")
    assert first < next(i for i, x in enumerate(lines) if x.startswith("step 0 base ")) + 12
    report = (tmp_path / "res" / "report.txt").read_text().splitlines()
    assert report[3:5] == ["Answer", "------"] and report[5].startswith("ANSWER: ")
    verdict = json.loads((tmp_path / "res" / "verdict.json").read_text())
    assert f"({verdict['outcome']})" in report[5]
    code, quiet, err = run_in(tmp_path, ROOT / "run_all.py", "--results-dir", "res",
                              "--compare-only", "--quiet")
    assert code == 0, err
    block = "\n".join(lines[first:lines.index("Training progression") - 1]).rstrip()
    assert quiet.rstrip() == block                    # the one block, printed alone
    assert "rests on:" in quiet and "next:" in quiet and max(map(len, quiet.splitlines())) <= 100


@pytest.mark.slow
def test_every_next_command_of_the_answer_runs_as_pasted(tiny_cache, tmp_path):
    code, out, err = run_in(tmp_path, ROOT / "run_all.py", "--cache-dir", tiny_cache,
                            "--results-dir", "res", "--jobs", "1", "--quiet")
    assert code == 0, err
    nxt = out[out.index("\nnext:\n") + 7:out.index("\n\nDetails follow")].splitlines()
    commands = [c.strip() for c in "\n".join(x for x in nxt if x.startswith("    "))
                .replace(" \\\n", " ").splitlines()]
    assert commands and all("run_all.py" in c for c in commands)
    for line in commands:
        code, _, err = paste(tmp_path, line + " --jobs 1 --quiet", timeout=600)
        assert code == 0, (line, err)


def test_warnings_go_to_stderr_and_progress_comes_in_step_order(tiny_cache, tmp_path):
    code, out, err = run_in(tmp_path, ROOT / "run_all.py", "--cache-dir", tiny_cache,
                            "--results-dir", "res", "--jobs", "1")
    assert code == 0, err
    assert "warning: leakage audit" in err
    assert not any(x.startswith("warning:") for x in out.splitlines())
    progress = [int(x.split()[1]) for x in out.splitlines() if x.endswith("s)")
                and " fits done (" in x]
    assert progress == [0, 1, 2, 3]
    lines = out.splitlines()                            # one vocabulary for where fits stopped
    table = lines[lines.index("Training progression"):lines.index("Training progression") + 8]
    assert any(x.endswith("stopped by") for x in table) and not any("conv." in x for x in table)
    assert any("  tol, <= " in x for x in table)
    assert "premise ok: fits_converged: every fit stopped by the tolerance" in out
    assert "'ns (Holm)'" in out                     # the interval / call legend


def test_grid_and_transfer_tables_are_complete_and_labelled(tiny_cache, tmp_path):
    code, out, err = run_in(tmp_path, ROOT / "run_all.py", "--cache-dir", tiny_cache,
                            "--results-dir", "res", "--jobs", "1", "-C", "0.1", "10")
    assert code == 0, err
    head = next(x for x in out.splitlines() if x.startswith("layer  C "))
    assert head.split() == ["layer", "C", "penalty", "step", "CV", "AUROC", "non-zero", "w",
                            "gold_106", "sycophant", "model_organism", "benchmark", "answer"]
    assert "model_organism AUROC vs ref. negatives" in " ".join(out.split())
    code, out, err = run_in(tmp_path, ROOT / "run_all.py", "--cache-dir", tiny_cache,
                            "--results-dir", "res", "--jobs", "1", "--steps", "0", "1",
                            "--transfer")
    assert code == 0, err
    lines = out.splitlines()
    top = next(i for i, x in enumerate(lines) if x.split()[:4] == ["training", "mix", "eval", "set"])
    rows = lines[top + 2:lines.index("", top)]
    trained = [x for x in rows if "(no probe)" not in x]
    assert trained and all(re.search(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] +\d+$", x)
                           for x in trained)                          # value, interval, n


def test_a_probe_that_cannot_fit_and_duplicated_held_out_rows_get_concrete_next_steps(
        cache_copy, tmp_path):
    import numpy as np
    layer = cache_copy / "layer_40"
    y = np.load(layer / "train_labels.npy")
    np.save(layer / "train_labels.npy", np.random.default_rng(0).permutation(y))  # noise labels
    x = np.load(layer / "sycophant_activations.npy")
    np.save(layer / "sycophant_activations.npy", x[np.arange(len(x)) % 4])   # 4 rows, copied
    code, out, err = run_in(tmp_path, ROOT / "run_all.py", "--cache-dir", cache_copy,
                            "--results-dir", "res", "--jobs", "1", "--quiet", "--no-sidecar")
    assert code == 0, err
    text = " ".join(out.split())
    assert "rests on: - the probe cannot fit its own training data (step 0's CV AUROC 0." in text
    assert "sycophant: 100% of the held-out rows duplicate training rows exactly" in text
    nxt = " ".join(out[out.index("\nnext:\n"):].replace(" \\\n", " ").split())
    assert "--results-dir res_dedup --dedup-split" in nxt
