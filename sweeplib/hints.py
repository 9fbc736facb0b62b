"""Commands the tool prints for a user to paste: the interpreter that runs now, a script of
this tool, paths as the current folder reaches them; which script takes a flag; the command
that reruns some steps with the flags a run was given.

    command("generate_report.py", "--results-dir", Path("results/demo"))
    # -> '.venv/bin/python generate_report.py --results-dir results/demo'

Imports only the standard library and common.py: every module may import it.
"""
from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from common import DEFAULTS, DEMO_CACHE_DIR


ROOT = Path(__file__).resolve().parent.parent      # the folder of the scripts


def command(script, *args):
    """A command line to paste into the shell this process was started from: the interpreter
    running now (the venv's, not a bare 'python' that may lack the packages) and a script of
    this tool, paths relative to the current folder where they lie inside it, every word
    shell-quoted. command('generate_report.py', '--results-dir', d)."""
    words = [_interpreter(), pasteable(ROOT / script)]
    words += [pasteable(a) if isinstance(a, Path) else str(a) for a in args]
    return " ".join(shlex.quote(w) for w in words)


def _interpreter():
    """sys.executable as the shell reaches it: its name when PATH finds this very file (an
    activated venv), else its path, relative when it lies inside the current folder."""
    exe = os.path.abspath(sys.executable or "python3")
    for name in ("python3", "python"):
        found = shutil.which(name)
        if found and os.path.dirname(os.path.abspath(found)) == os.path.dirname(exe) \
                and os.path.realpath(found) == os.path.realpath(exe):
            return name
    shown = pasteable(Path(exe))
    return shown if "/" in shown else f"./{shown}"


def pasteable(path):
    """A path for a command line: relative to the current folder when inside it, else
    absolute."""
    path = Path(os.path.abspath(path))
    try:
        return str(path.relative_to(Path.cwd())) if path != Path.cwd() else "."
    except (ValueError, OSError):
        return str(path)


# Flags some script of this tool takes: a script given another script's flag says which does.
FLAG_OWNERS = {
    "--steps": "run_all.py", "--resume": "run_all.py", "--compare-only": "run_all.py",
    "--budget": "run_all.py", "--baseline": "run_all.py", "--orderings": "run_all.py",
    "--transfer": "run_all.py", "--solver-check": "run_all.py",
    "--figures": "run_all.py and generate_report.py", "--no-figures": "generate_report.py",
    "--output": "generate_report.py", "--format": "generate_report.py",
    "--gold-tolerance": "run_all.py, compare_all_steps.py and generate_report.py",
    "--min-base-auroc": "run_all.py, compare_all_steps.py and generate_report.py",
    "--allow-mixed": "compare_all_steps.py and generate_report.py",
    "--cache-dir": "run_all.py and the step scripts", "--demo": "run_all.py and the step scripts",
}


def rerun_command(argv, steps):
    """The run_all.py command that reruns `steps` with the flags of argv (a step script's or
    run_all.py's flags as given; their --steps replaced)."""
    kept, skipping = [], False
    for word in argv:
        if word == "--steps" or word.startswith("--steps="):
            skipping = word == "--steps"
            continue
        if skipping and not word.startswith("-"):
            continue
        skipping = False
        kept.append(word)
    return command("run_all.py", "--steps", *map(str, sorted(steps)), *kept)


# Recorded config keys -> the flag that sets them (flags_of: a run's flags from its record)
RECORDED_FLAGS = {"layer": "--layer", "C": "-C", "penalty": "--penalty", "max_iter": "--max-iter",
                  "tol": "--tol", "seed": "--seed", "eval_fraction": "--eval-fraction",
                  "cv_folds": "--cv-folds", "feature_ids_file": "--feature-ids",
                  "repeats": "--repeats", "dedup_split": "--dedup-split",
                  "near_dup_threshold": "--near-dup-threshold", "class_weight": "--class-weight",
                  "source_weight": "--source-weight", "extra_eval": "--extra-eval"}


def flags_of(recorded, data_source=None):
    """The flags that make a run with a recorded config (a step JSON's `config`): the cache
    (--demo for the default demo cache; another demo cache is known by its marker), then each
    value that differs from its default (common.DEFAULTS; flags without one default to off)."""
    demo = data_source == "demo"
    cache = Path(recorded.get("cache_dir", DEFAULTS["cache_dir"]))
    out = ["--demo"] if demo and cache == DEMO_CACHE_DIR else ["--cache-dir", cache]
    for key, flag in RECORDED_FLAGS.items():
        value = recorded.get(key)
        if value is None or value is False or value == [] or value == DEFAULTS.get(key):
            continue
        words = value if isinstance(value, list) else [] if value is True else [value]
        out += [flag] + [repr(w) if isinstance(w, float) else str(w) for w in words]
    return out
