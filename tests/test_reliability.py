"""Bad input fails clearly (exit 2, first line names file and problem) and loses no results;
interrupted runs leave complete files; probes are hash-checked before unpickling."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweeplib import analysis
import common
import run_all
from conftest import FAST_FLAGS, ROOT, write_record
from sweeplib import base
from sweeplib import data
from sweeplib import results_read
from sweeplib import stepfiles

L40 = "layer_40"


def snapshot(folder):
    """{relative path: bytes} of every file under folder."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture
def old_results(tiny_run, tmp_path):
    """A private copy of a complete earlier sweep, to check that failures leave it intact."""
    dst = tmp_path / "results"
    shutil.copytree(tiny_run, dst)
    return dst


def _save(path, arr):
    np.save(path, arr, allow_pickle=True)


def _acts(cache):
    return cache / L40 / "train_activations.npy"


# Each fault: (id, function(cache) -> extra argv, text expected in the first line)
def f_cache_missing(cache):
    shutil.rmtree(cache)
    return [], "cache directory not found"


def f_layer_missing(cache):
    return ["--layer", "16"], "layer_16"


def f_dataset_missing(cache):
    (cache / L40 / "benchmark_activations.npy").unlink()
    return ["--steps", "3"], "benchmark_activations.npy: missing"


def f_empty_npy(cache):
    _acts(cache).write_bytes(b"")
    return [], "train_activations.npy: not a readable .npy"


def f_truncated_npy(cache):
    data = _acts(cache).read_bytes()
    _acts(cache).write_bytes(data[: len(data) // 2])
    return [], "train_activations.npy: truncated .npy file"


def f_object_array(cache):
    _save(_acts(cache), np.array([{"a": 1}] * 3, dtype=object))
    return [], "train_activations.npy: holds an object array"


def f_one_d(cache):
    _save(_acts(cache), np.zeros(10, dtype=np.float32))
    return [], "train_activations.npy: activations must be 2-D"


def f_three_d(cache):
    _save(_acts(cache), np.zeros((4, 2, 3), dtype=np.float32))
    return [], "train_activations.npy: activations must be 2-D"


def f_label_count(cache):
    y = np.load(cache / L40 / "train_labels.npy")
    np.save(cache / L40 / "train_labels.npy", y[:-3])
    return [], "train_labels.npy"


def f_feature_count(cache):
    x = np.load(cache / L40 / "benchmark_activations.npy")
    np.save(cache / L40 / "benchmark_activations.npy", x[:, :-1])
    return [], "benchmark_activations.npy"


def _poison(value):
    def fault(cache):
        x = np.load(_acts(cache))
        x[3, 5] = value
        np.save(_acts(cache), x)
        return [], "train_activations.npy: non-finite value"
    return fault


def f_unknown_label(cache):
    p = cache / L40 / "benchmark_labels.json"
    doc = json.loads(p.read_text())
    doc["labels"][7] = "deceptive_maybe"
    p.write_text(json.dumps(doc))
    return [], "benchmark_labels.json: unknown label 'deceptive_maybe'"


def f_malformed_json(cache):
    (cache / L40 / "sycophant_labels.json").write_text('{"labels": ["alignment_faking",')
    return [], "sycophant_labels.json: malformed labels JSON"


def f_json_without_labels(cache):
    (cache / L40 / "sycophant_labels.json").write_text('{"unique_labels": []}')
    return [], "sycophant_labels.json: labels JSON must be an object with a 'labels' list"


def f_one_class_mix(cache):
    y = np.load(cache / L40 / "train_labels.npy")
    np.save(cache / L40 / "train_labels.npy", np.zeros_like(y))
    return ["--steps", "0"], "train_labels.npy: training mix of step 0"


def f_tiny_eval_set(cache):
    x = np.load(cache / L40 / "sycophant_activations.npy")
    np.save(cache / L40 / "sycophant_activations.npy", x[:1])
    (cache / L40 / "sycophant_labels.json").write_text(json.dumps({"labels": ["alignment_faking"]}))
    return [], "sycophant_activations.npy: eval set sycophant has 0 sample(s)"


def _feature_ids(ids, expected):
    def fault(cache):
        p = cache / "ids.json"
        p.write_text(json.dumps(ids))
        return ["--feature-ids", str(p)], f"ids.json: {expected}"
    return fault


def f_results_is_file(cache):
    target = cache.parent / "results_file"
    target.write_text("x")
    return ["--results-dir", str(target)], "results_file: results path exists and is not a directory"


def f_results_parent_is_file(cache):
    target = cache.parent / "results_file2"
    target.write_text("x")
    return ["--results-dir", str(target / "sub")], "cannot create results directory"


# ---- second round: degenerate data, odd files, flags checked against the data ------------
def _all_datasets(cache, fn):
    for stem in ("train", "test", "sycophant", "model_organism", "benchmark"):
        p = cache / L40 / f"{stem}_activations.npy"
        np.save(p, fn(np.load(p)))


def _set(stem, fn, expected):
    def fault(cache):
        p = cache / L40 / f"{stem}_activations.npy"
        np.save(p, fn(np.load(p)))
        return [], expected
    return fault


def _value_at(value, row=3, col=5):
    def fn(x):
        x[row, col] = value
        return x
    return fn


def f_bitrot(cache):
    """One float32 flips its top exponent bit in the middle of the file (0.75 -> 2.6e38)."""
    p = _acts(cache)
    x = np.load(p)
    r, c = x.shape[0] // 2, int(np.flatnonzero(x[x.shape[0] // 2])[0])
    x[r, c] = 0.75
    np.save(p, x)
    data = bytearray(p.read_bytes())
    data[len(data) - x.nbytes + (r * x.shape[1] + c) * 4 + 3] ^= 0x40
    p.write_bytes(bytes(data))
    return [], f"train_activations.npy: value 2.55e+38 at row {r}, feature {c}"


def f_zero_features(cache):
    _all_datasets(cache, lambda x: x[:, :0])
    return [], "train_activations.npy: activations have no features"


def f_zero_rows(cache):
    np.save(cache / L40 / "test_activations.npy", np.load(cache / L40 / "test_activations.npy")[:0])
    np.save(cache / L40 / "test_labels.npy", np.zeros(0, dtype=np.int8))
    return [], "test_activations.npy: activations file has no rows"


def _replace_with(stem, make, expected):
    def fault(cache):
        p = cache / L40 / stem
        p.unlink()
        make(p)
        return [], f"{stem}: {expected}"
    return fault


def _label_text(text, expected):
    def fault(cache):
        p = cache / L40 / "sycophant_labels.json"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        return [], f"sycophant_labels.json: {expected}"
    return fault


def _ids_path(make, expected):
    def fault(cache):
        p = cache / "ids.json"
        make(p)
        return ["--feature-ids", str(p)], expected
    return fault


def f_cv_folds_over_class(cache):
    y = np.load(cache / L40 / "train_labels.npy")
    y[:] = 0
    y[:3] = 1                                        # 3 AF samples in step 0's mix
    np.save(cache / L40 / "train_labels.npy", y)
    return ["--steps", "0"], "--cv-folds: 5 folds, but the training mix of step 0"


def f_budget_base_without_step0(cache):
    return ["--steps", "4", "--budget", "base"], "--budget base: step 0's mix"


def f_budget_too_small_for_folds(cache):
    return ["--budget", "12"], "--budget: 12 samples are too few for step"


def f_steps_kept_from_another_config(cache):
    return ["--steps", "4", "-C", "1"], "step_0_base.json: this folder keeps step 0 from a run " \
                                        "with another 'C'"


FAULTS = [
    ("cache_missing", f_cache_missing), ("layer_missing", f_layer_missing),
    ("dataset_missing", f_dataset_missing), ("empty_npy", f_empty_npy),
    ("truncated_npy", f_truncated_npy), ("object_array", f_object_array),
    ("one_d", f_one_d), ("three_d", f_three_d), ("label_count", f_label_count),
    ("feature_count", f_feature_count), ("nan", _poison(np.nan)), ("inf", _poison(np.inf)),
    ("unknown_label", f_unknown_label), ("malformed_json", f_malformed_json),
    ("json_without_labels", f_json_without_labels), ("one_class_mix", f_one_class_mix),
    ("tiny_eval_set", f_tiny_eval_set),
    ("ids_out_of_range", _feature_ids([0, 99999], "feature id 99999 out of range")),
    ("ids_duplicated", _feature_ids([1, 2, 1], "feature id 1 appears more than once")),
    ("ids_not_integers", _feature_ids([1, "x"], "feature ids must be integers")),
    ("results_is_file", f_results_is_file), ("results_parent_is_file", f_results_parent_is_file),
    # degenerate data
    ("all_zero_dataset", _set("benchmark", np.zeros_like,
                              "benchmark_activations.npy: no active feature in any of its")),
    ("huge_finite_value", _set("train", _value_at(3e38),
                               "train_activations.npy: value 3e+38 at row 3, feature 5")),
    ("huge_value_eval_set", _set("test", _value_at(1e12, 2, 7),
                                 "test_activations.npy: value 1e+12 at row 2, feature 7")),
    ("bitrot", f_bitrot), ("zero_features", f_zero_features), ("zero_rows", f_zero_rows),
    ("float64_out_of_float32_range",
     _set("test", lambda x: _value_at(1e300)(x.astype(np.float64)),
          "test_activations.npy: value 1e+300 outside the float32")),
    ("constant_training_rows", _set("train", np.ones_like,
                                    "train_labels.npy: every row of the training mix of step 0")),
    # label / activation files that are not regular files, or not sane JSON
    ("labels_json_directory", _replace_with("sycophant_labels.json", lambda p: p.mkdir(),
                                            "labels JSON is a directory")),
    ("labels_json_fifo", _replace_with("sycophant_labels.json", os.mkfifo,
                                       "labels JSON is a FIFO")),
    ("labels_json_dev_zero", _replace_with("sycophant_labels.json",
                                           lambda p: p.symlink_to("/dev/zero"),
                                           "labels JSON is a character device")),
    ("labels_npy_directory", _replace_with("test_labels.npy", lambda p: p.mkdir(),
                                           ".npy file is a directory")),
    ("labels_npy_fifo", _replace_with("test_labels.npy", os.mkfifo, ".npy file is a FIFO")),
    ("activations_fifo", _replace_with("sycophant_activations.npy", os.mkfifo,
                                       ".npy file is a FIFO")),
    ("labels_deeply_nested", _label_text("[" * 100000 + "]" * 100000,
                                         "malformed labels JSON (nested too deeply)")),
    ("labels_huge_number", _label_text('{"labels": [' + "9" * 5000 + "]}",
                                       "malformed labels JSON (Exceeds the limit")),
    ("labels_not_utf8", _label_text(b'{"labels": ["\xff"]}', "malformed labels JSON (not UTF-8")),
    ("ids_directory", _ids_path(lambda p: p.mkdir(), "ids.json: feature-ids file is a directory")),
    ("ids_fifo", _ids_path(os.mkfifo, "ids.json: feature-ids file is a FIFO")),
    ("ids_dev_zero", _ids_path(lambda p: p.symlink_to("/dev/zero"),
                               "ids.json: feature-ids file is a character device")),
    ("ids_deeply_nested", _ids_path(lambda p: p.write_text("[" * 100000 + "]" * 100000),
                                    "ids.json: malformed feature-ids JSON (nested too deeply)")),
    ("ids_huge_number", _ids_path(lambda p: p.write_text("[" + "9" * 5000 + "]"),
                                  "ids.json: malformed feature-ids JSON (Exceeds the limit")),
    # flags that can only be checked against the data, before anything is written
    ("cv_folds_over_class", f_cv_folds_over_class),
    ("budget_base_without_step0", f_budget_base_without_step0),
    ("budget_too_small_for_folds", f_budget_too_small_for_folds),
    ("steps_kept_from_another_config", f_steps_kept_from_another_config),
]


@pytest.mark.parametrize("fault", [f for _, f in FAULTS], ids=[i for i, _ in FAULTS])
def test_bad_input_exits_2_names_the_problem_and_keeps_results(fault, cache_copy, old_results,
                                                               capsys):
    before = snapshot(old_results)
    extra, expected = fault(cache_copy)
    argv = ["--cache-dir", str(cache_copy), "--results-dir", str(old_results)] + FAST_FLAGS + extra
    rc = run_all.main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    first = err.splitlines()[0]
    assert first.startswith("error: ") and expected in first, first
    assert snapshot(old_results) == before


@pytest.mark.parametrize("flag,value,expected", [
    ("-C", "0", "argument -C: must be > 0"),
    ("--eval-fraction", "1.5", "argument --eval-fraction: must be in (0, 1)"),
    ("--repeats", "0", "argument --repeats: must be >= 1"),
    ("--n-boot", "200", "argument --n-boot: removed; intervals are no longer bootstrapped"),
    ("--gold-tolerance", "1.5", "argument --gold-tolerance: must be in (0, 1)"),
    ("--penalty", "l3", "argument --penalty: invalid choice"),
])
def test_bad_flag_value_exits_2_with_the_problem_first(flag, value, expected, tiny_cache,
                                                      old_results, capsys):
    before = snapshot(old_results)
    with pytest.raises(SystemExit) as e:
        run_all.main(["--cache-dir", str(tiny_cache), "--results-dir", str(old_results),
                      flag, value])
    assert e.value.code == 2
    assert expected in capsys.readouterr().err.splitlines()[0]
    assert snapshot(old_results) == before


def test_bad_input_from_the_command_line_has_no_traceback(cache_copy, tmp_path):
    f_nan = _poison(np.nan)
    f_nan(cache_copy)
    r = subprocess.run([sys.executable, str(ROOT / "00_base_probe.py"), "--cache-dir",
                        str(cache_copy), "--results-dir", str(tmp_path / "r")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert "train_activations.npy" in r.stderr.splitlines()[0]


def test_negative_values_are_allowed_but_noted(cache_copy, tmp_path, capsys):
    x = np.load(cache_copy / L40 / "test_activations.npy")
    x[0, 0] = -1.0
    np.save(cache_copy / L40 / "test_activations.npy", x)
    rc = run_all.main(["--cache-dir", str(cache_copy), "--results-dir", str(tmp_path / "r"),
                       "--steps", "0"] + FAST_FLAGS)
    assert rc == 0
    assert "test_activations.npy: 1 negative values" in capsys.readouterr().err


def test_step_that_does_not_need_a_missing_file_still_runs(cache_copy, tmp_path, capsys):
    (cache_copy / L40 / "benchmark_activations.npy").unlink()
    rc = run_all.main(["--cache-dir", str(cache_copy), "--results-dir", str(tmp_path / "r"),
                       "--steps", "0"] + FAST_FLAGS)
    assert rc == 0
    assert "benchmark_activations.npy: missing; eval set benchmark is skipped" in \
        capsys.readouterr().err
    rec = json.loads((tmp_path / "r" / "step_0_base.json").read_text())
    assert "benchmark" not in rec["evaluation"]
    assert rec["evaluation"]["sycophant"]["auroc_vs_reference_negatives"] is None


def test_demo_and_real_results_never_share_a_folder(cache_copy, old_results, capsys):
    (cache_copy / common.DEMO_MARKER).unlink()          # now it looks like a real cache
    before = snapshot(old_results)
    rc = run_all.main(["--cache-dir", str(cache_copy), "--results-dir", str(old_results)]
                      + FAST_FLAGS)
    assert rc == 2
    assert "holds 'demo' results; refusing to write 'cache' results" in capsys.readouterr().err
    assert snapshot(old_results) == before


def test_compare_refuses_steps_from_different_configs(old_results, capsys):
    p = old_results / "step_2_add_organisms.json"
    rec = json.loads(p.read_text())
    rec["config"]["C"] = 1.0
    write_record(p, rec)                      # as if step 2 had been run with C = 1
    with pytest.raises(base.InputError, match="differ in config 'C'"):
        analysis.analyze(old_results)
    assert analysis.analyze(old_results, allow_mixed=True).steps == [0, 1, 2, 3]


def test_tampered_probe_is_refused(old_results):
    p = old_results / "step_1_probe.pkl"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(base.InputError, match="does not match"):
        results_read.load_probe(old_results / "step_1_add_sycophant.json")
    with pytest.raises(base.InputError, match=r"step_1_probe.pkl: sha256 .* does not match .* "
                                              "the step's files do not belong together"):
        analysis.analyze(old_results)                     # every reader checks it too
    p.unlink()
    with pytest.raises(base.InputError, match=r"step_1_probe.pkl: missing"):
        analysis.analyze(old_results)


def test_resume_skips_up_to_date_steps_and_reruns_changed_ones(tiny_cache, old_results, capsys):
    base = ["--cache-dir", str(tiny_cache), "--results-dir", str(old_results)] + FAST_FLAGS
    before = snapshot(old_results)
    assert run_all.main(base + ["--resume", "--steps", "0", "1", "2", "3"]) == 0
    after = snapshot(old_results)
    for name in before:
        if name.startswith("step_"):
            assert after[name] == before[name], name
    # a tampered probe is not "up to date": that step reruns, the others stay
    p = old_results / "step_2_probe.pkl"
    p.write_bytes(p.read_bytes() + b"x")
    assert run_all.main(base + ["--resume"]) == 0
    again = snapshot(old_results)
    assert again["step_2_add_organisms.json"] != before["step_2_add_organisms.json"]
    assert again["step_1_add_sycophant.json"] == before["step_1_add_sycophant.json"]


@pytest.mark.slow
def test_killed_runs_leave_only_complete_files_of_one_run_each(tiny_cache, tmp_path):
    out = tmp_path / "r"
    cmd = [sys.executable, str(ROOT / "run_all.py"), "--cache-dir", str(tiny_cache),
           "--results-dir", str(out)] + FAST_FLAGS
    for delay in (1.0, 2.2, 3.5, 5.0):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for step in common.STEPS:
            paths = stepfiles.output_paths(out, step)
            if paths["json"].exists():
                rec = json.loads(paths["json"].read_text())           # parses
                assert rec["step"] == step.number
            scores_run = probe_run = None
            if paths["scores"].exists():
                with np.load(paths["scores"], allow_pickle=False) as z:
                    scores_run = str(z["run_id"])
            if paths["probe"].exists():
                import joblib
                probe_run = joblib.load(paths["probe"])["run_id"]
            run_ids = {r for r in (scores_run, probe_run) if r is not None}
            if paths["json"].exists():
                if run_ids == {rec["run_id"]}:
                    stepfiles.load_scores(paths["scores"], rec["run_id"])
                    results_read.load_probe(paths["json"])
                else:          # torn unit: each reader refuses the file of another run
                    assert scores_run != rec["run_id"] or probe_run != rec["run_id"]
                    if scores_run != rec["run_id"]:
                        with pytest.raises(base.InputError):
                            stepfiles.load_scores(paths["scores"], rec["run_id"])
                    if probe_run != rec["run_id"]:
                        with pytest.raises(base.InputError):
                            results_read.load_probe(paths["json"])
    assert subprocess.run(cmd + ["--resume"], capture_output=True).returncode == 0
    a = analysis.analyze(out)
    assert a.steps == [0, 1, 2, 3] and len(a.run_ids) >= 1


# ---- property tests ------------------------------------------------------------------------
KNOWN = list(common.LABEL_MAP)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(KNOWN), st.text(min_size=1, max_size=12)),
                min_size=1, max_size=40))
def test_label_mapping_property(tmp_path_factory, labels):
    p = tmp_path_factory.mktemp("lab") / "x_labels.json"
    p.write_text(json.dumps({"labels": labels, "extra": {"layer": 40}}))
    unknown = [lab for lab in labels if lab not in common.LABEL_MAP]
    if unknown:
        with pytest.raises(base.InputError) as e:
            data.load_labels(p, "x")
        assert repr(unknown[0]) in str(e.value) and str(p) in str(e.value)
    else:
        y, classes = data.load_labels(p, "x")
        assert y.tolist() == [common.LABEL_MAP[lab] for lab in labels]
        assert classes.tolist() == labels


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 12), cols=st.integers(1, 20),
       dtype=st.sampled_from([np.float16, np.float32, np.float64, np.int32, np.uint8]),
       density=st.floats(0, 1), bad=st.sampled_from([None, np.nan, np.inf]),
       seed=st.integers(0, 2 ** 16))
def test_loader_property(tmp_path_factory, rows, cols, dtype, density, bad, seed):
    rng = np.random.default_rng(seed)
    x = (rng.random((rows, cols)) < density) * rng.integers(1, 50, (rows, cols))
    x = x.astype(dtype)
    if bad is not None and np.dtype(dtype).kind == "f":
        x[rng.integers(rows), rng.integers(cols)] = bad
    p = tmp_path_factory.mktemp("act") / "a_activations.npy"
    np.save(p, x)
    if bad is not None and np.dtype(dtype).kind == "f":
        with pytest.raises(base.InputError, match="non-finite"):
            data.load_activations(p)
    else:
        X, n_neg = data.load_activations(p)
        assert X.dtype == np.float32 and X.shape == (rows, cols) and n_neg == 0
        assert np.array_equal(X.toarray(), x.astype(np.float32))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-2, 3), min_size=1, max_size=30))
def test_npy_label_property(tmp_path_factory, values):
    p = tmp_path_factory.mktemp("npy") / "l.npy"
    np.save(p, np.array(values, dtype=np.int64))
    if set(values) <= {0, 1}:
        y, _ = data.load_labels(p, "train")
        assert y.tolist() == values
    else:
        with pytest.raises(base.InputError, match="0/1"):
            data.load_labels(p, "train")
