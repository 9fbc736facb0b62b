"""Hostile input from the robustness review: every case stops with one error line naming the
file (or flag) and the problem, exit 2, nothing overwritten; or, for a data problem that still
gives numbers, a recorded data warning."""
import argparse
import errno
import json
import os
import shutil

import numpy as np
import pytest

import demo_data
import generate_report
import run_all
from conftest import FAST_FLAGS, TINY
from sweeplib import config, demo
from test_reliability import L40, old_results, snapshot  # noqa: F401 (fixture)

DEMO_FLAGS = ["--scale", str(TINY["scale"]), "--n-features", str(TINY["n_features"]),
              "--quiet"]


def run(cache, results, *extra):
    """run_all.main on a cache and results folder with the fast flags."""
    return run_all.main(["--cache-dir", str(cache), "--results-dir", str(results)]
                        + FAST_FLAGS + [str(x) for x in extra])


def first_error(capsys):
    """The first stderr line, which must be the error."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    first = err.splitlines()[0]
    assert first.startswith("error: "), err
    return first


def flag_error(main, argv, capsys):
    """The first line of an argparse-style refusal (exit 2)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return first_error(capsys)


@pytest.fixture
def real_cache(cache_copy):
    """A cache that is not a demo cache (the copy without the generator's marker)."""
    (cache_copy / "DEMO_CACHE.json").unlink()
    return cache_copy


# --------------------------------------------------------------------------------------------
# D1: the demo generator never writes over a folder that is not a demo cache
# --------------------------------------------------------------------------------------------
def test_demo_data_refuses_a_real_cache_and_leaves_it_unchanged(real_cache, capsys):
    before = snapshot(real_cache)
    first = flag_error(demo_data.main, ["--out", str(real_cache)] + DEMO_FLAGS, capsys)
    assert f"argument --out: {real_cache}: folder is not empty and is not a demo cache" in first
    assert snapshot(real_cache) == before


def test_demo_data_refuses_any_non_empty_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    first = flag_error(demo_data.main, ["--out", str(tmp_path)] + DEMO_FLAGS, capsys)
    assert "is not a demo cache (no DEMO_CACHE.json)" in first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_run_all_demo_refuses_a_real_cache_dir(real_cache, tmp_path, capsys):
    before = snapshot(real_cache)
    rc = run_all.main(["--demo", "--cache-dir", str(real_cache), "--results-dir",
                       str(tmp_path / "r")] + FAST_FLAGS)
    assert rc == 2
    assert f"{real_cache}: folder is not empty and is not a demo cache" in first_error(capsys)
    assert snapshot(real_cache) == before
    assert not (tmp_path / "r").exists()


def test_demo_generator_rewrites_its_own_and_interrupted_caches(tiny_cache, tmp_path):
    own = tmp_path / "own"
    shutil.copytree(tiny_cache, own)
    demo.generate(own, verbose=False, **TINY)              # a complete demo cache
    interrupted = tmp_path / "interrupted"
    shutil.copytree(tiny_cache, interrupted)
    (interrupted / "DEMO_CACHE.json").rename(interrupted / "DEMO_CACHE.partial.json")
    demo.generate(interrupted, verbose=False, **TINY)      # only the in-progress marker
    assert (interrupted / "DEMO_CACHE.json").exists()
    assert not (interrupted / "DEMO_CACHE.partial.json").exists()
    assert snapshot(interrupted) == snapshot(own)


def test_demo_data_refuses_an_empty_out(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                 # before the fix, '' wrote into the cwd
    assert "argument --out: must not be empty" in flag_error(demo_data.main, ["--out", ""],
                                                              capsys)
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------
# D2: --output never replaces a device, FIFO, folder or one of the tool's own files
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,make,expected", [
    ("fifo", os.mkfifo, "is a FIFO, not a regular file; refusing to replace it"),
    ("dev_null", lambda p: p.symlink_to("/dev/null"),
     "is a character device, not a regular file; refusing to replace it"),
    ("folder", lambda p: p.mkdir(), "is a directory; give a file name"),
    ("step_0_base.json", None, "a name of this tool's own files (step_*.json)"),
    ("step_1_scores.npz", None, "(step_*_scores.npz)"),
    ("step_2_probe.pkl", None, "(step_*_probe.pkl)"),
    ("verdict.json", None, "(verdict.json)"),
    ("train_activations.npy", None, "(*_activations.npy)"),
    ("test_labels.npy", None, "(*_labels.npy)"),
    ("benchmark_labels.json", None, "(*_labels.json)"),
])
def test_output_refuses_non_regular_paths_and_own_file_names(name, make, expected, old_results,
                                                             tmp_path, capsys):
    target = (old_results / name) if make is None else (tmp_path / name)
    if make:
        make(target)
    before = snapshot(old_results)
    first = flag_error(generate_report.main, ["--results-dir", str(old_results), "--output",
                                              str(target), "--no-figures"], capsys)
    assert first.startswith("error: argument --output: ") and expected in first, first
    assert snapshot(old_results) == before


def test_output_through_a_symlink_to_an_own_file_is_refused(old_results, tmp_path, capsys):
    link = tmp_path / "report.txt"
    link.symlink_to(old_results / "step_0_base.json")
    first = flag_error(generate_report.main, ["--results-dir", str(old_results), "--output",
                                              str(link)], capsys)
    assert "(step_*.json)" in first


def test_output_path_type_refuses_an_unreachable_path(tmp_path):
    with pytest.raises(argparse.ArgumentTypeError, match=r"cannot use it \(File name too long"):
        config.output_path(str(tmp_path / ("o" * 300)))


# --------------------------------------------------------------------------------------------
# W3: an absolute magnitude limit (a uniformly scaled cache passes every relative check)
# --------------------------------------------------------------------------------------------
def test_cache_scaled_by_1e19_is_refused_naming_the_file_and_value(cache_copy, tmp_path,
                                                                   capsys):
    for path in sorted((cache_copy / L40).glob("*_activations.npy")):
        np.save(path, np.load(path) * np.float32(1e19))
    assert run(cache_copy, tmp_path / "r", "--no-sidecar") == 2
    first = first_error(capsys)
    assert "train_activations.npy: value " in first
    assert "is above the absolute limit 1e+18" in first
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


# --------------------------------------------------------------------------------------------
# W4: two label files, trailing bytes, a one-class held-out part
# --------------------------------------------------------------------------------------------
def test_both_label_files_are_refused_naming_both(cache_copy, old_results, capsys):
    y = np.load(cache_copy / L40 / "test_labels.npy")
    names = ["alignment_faking" if v else "aligned" for v in y]
    (cache_copy / L40 / "test_labels.json").write_text(json.dumps({"labels": names}))
    before = snapshot(old_results)
    assert run(cache_copy, old_results) == 2
    first = first_error(capsys)
    assert ("test_labels.npy: two label files for dataset gold_106, test_labels.npy and "
            "test_labels.json; keep one") in first
    assert snapshot(old_results) == before


@pytest.mark.parametrize("stem", ["benchmark_activations", "train_labels"])
def test_npy_with_trailing_bytes_is_refused(stem, cache_copy, old_results, capsys):
    with open(cache_copy / L40 / f"{stem}.npy", "ab") as f:
        f.write(b"\0" * 100)
    before = snapshot(old_results)
    assert run(cache_copy, old_results) == 2
    first = first_error(capsys)
    assert f"{stem}.npy: 100 bytes after the array data" in first
    assert snapshot(old_results) == before


def test_one_class_held_out_benchmark_is_a_data_warning(cache_copy, tmp_path, capsys):
    path = cache_copy / L40 / "benchmark_labels.json"
    doc = json.loads(path.read_text())
    first_negative = next(i for i, lab in enumerate(doc["labels"]) if lab != "alignment_faking")
    doc["labels"] = ["alignment_faking"] * len(doc["labels"])
    doc["labels"][first_negative] = "aligned"          # one negative: never held out
    path.write_text(json.dumps(doc))
    assert run(cache_copy, tmp_path / "r", "--steps", "0") == 0
    err = capsys.readouterr().err
    expected = "benchmark_labels.json: the held-out part of benchmark ("
    assert sum(expected in line for line in err.splitlines()) == 1, err
    record = json.loads((tmp_path / "r" / "step_0_base.json").read_text())
    assert any(expected in w for w in record["data_warnings"])


# --------------------------------------------------------------------------------------------
# T5: demo_data.py flags
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag,value,expected", [
    ("--scale", "0", "argument --scale: must be a finite number > 0, got 0.0"),
    ("--scale", "nan", "argument --scale: must be a finite number > 0, got nan"),
    ("--scale", "inf", "argument --scale: must be a finite number > 0, got inf"),
    ("--scale", "1e9", "argument --scale/--n-features: the cache would take about"),
    ("--n-features", "3", "argument --n-features: 3 is too small for the feature layout"),
    ("--n-features", "0", "argument --n-features: must be an integer >= 1, got 0"),
    ("--seed", "-1", "argument --seed: must be an integer in [0, 4294967295], got -1"),
    ("--layers", "-1", "argument --layers: a layer must be an integer in [1, 1000], got -1"),
    ("--layers", "0", "argument --layers: a layer must be an integer in [1, 1000], got 0"),
])
def test_demo_data_bad_flags_exit_2(flag, value, expected, tmp_path, capsys):
    argv = ["--out", str(tmp_path / "c"), "--scale", "0.1", "--n-features", "256", "--quiet",
            flag, value]
    assert expected in flag_error(demo_data.main, argv, capsys)
    assert not (tmp_path / "c").exists()


def test_demo_data_out_that_is_a_file_exits_2(tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("x")
    first = flag_error(demo_data.main, ["--out", str(out)] + DEMO_FLAGS, capsys)
    assert f"argument --out: {out}: exists and is a regular file, not a folder" in first
    assert out.read_text() == "x"


def test_demo_data_out_in_a_read_only_folder_exits_2(tmp_path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)                 # root ignores the mode: os.access says what it would
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: (
        False if str(p) == str(ro) and mode & os.W_OK else real_access(p, mode, **k)))
    first = flag_error(demo_data.main, ["--out", str(ro / "c")] + DEMO_FLAGS, capsys)
    assert f"argument --out: {ro / 'c'}: its parent {ro} is not writable" in first
    assert not (ro / "c").exists()


# --------------------------------------------------------------------------------------------
# T3 / T4: paths the operating system refuses, say why
# --------------------------------------------------------------------------------------------
def test_cache_path_too_long_says_so(tmp_path, capsys):
    long_dir = tmp_path / ("d" * 300)
    assert run(long_dir, tmp_path / "r") == 2
    first = first_error(capsys)
    assert "cache directory: path too long (File name too long)" in first
    assert "not found" not in first and len(first) < 400


def test_results_path_too_long_says_so(tiny_cache, tmp_path, capsys):
    assert run(tiny_cache, tmp_path / ("r" * 300)) == 2
    assert "results directory: path too long" in first_error(capsys)


def test_unreadable_layer_folder_says_permission_denied(cache_copy, tmp_path, monkeypatch,
                                                        capsys):
    layer = cache_copy / L40
    layer.chmod(0)
    real_listdir, real_stat = os.listdir, os.stat

    def denied(path):
        """Raise what a non-root user gets inside a mode-000 folder (root is not refused)."""
        if str(path) == str(layer) or str(path).startswith(f"{layer}/"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(os, "listdir", lambda p=".": denied(p) or real_listdir(p))
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: (
        None if str(p) == str(layer) else denied(p)) or real_stat(p, *a, **k))
    try:
        assert run(cache_copy, tmp_path / "r") == 2
    finally:
        layer.chmod(0o755)
    first = first_error(capsys)
    assert f"{layer}: layer folder cannot be read (Permission denied)" in first


def test_dangling_symlink_activations_says_dangling(cache_copy, tmp_path, capsys):
    acts = cache_copy / L40 / "benchmark_activations.npy"
    acts.unlink()
    acts.symlink_to(tmp_path / "gone.npy")
    assert run(cache_copy, tmp_path / "r") == 2
    first = first_error(capsys)
    assert f"{acts}: activations file is a dangling symlink (-> {tmp_path / 'gone.npy'})" in first


def test_layer_path_that_is_a_file_says_so(cache_copy, tmp_path, capsys):
    shutil.rmtree(cache_copy / L40)
    (cache_copy / L40).write_text("not a folder")
    assert run(cache_copy, tmp_path / "r") == 2
    assert f"{cache_copy / L40}: layer folder is a regular file, not a folder" in \
        first_error(capsys)


# --------------------------------------------------------------------------------------------
# 7: --sidecar-dir ''
# --------------------------------------------------------------------------------------------
def test_empty_sidecar_dir_is_refused(tiny_cache, tmp_path, capsys):
    first = flag_error(run_all.main, ["--cache-dir", str(tiny_cache), "--results-dir",
                                      str(tmp_path / "r"), "--sidecar-dir", ""], capsys)
    assert "argument --sidecar-dir: must not be empty" in first
    assert not (tmp_path / "r").exists()
