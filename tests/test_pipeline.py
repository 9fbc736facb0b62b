"""Core pipeline: labels, splits, training mixes, probe, metrics, thresholds, end to end."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from sweeplib import analysis
import common
from sweeplib import probe
import run_all
from conftest import FAST_FLAGS, ROOT
from sweeplib import base
from sweeplib import data
from sweeplib.splits import build_mix, eval_sets, make_splits, training_rows
from sweeplib import execution
from sweeplib.config import RunConfig
from sweeplib import metrics
from sweeplib import results_read
from sweeplib import stepfiles


# ---- labels --------------------------------------------------------------------------------
def test_label_strings_map_to_binary_and_keep_fine_class(tmp_path):
    path = tmp_path / "x_labels.json"
    labels = ["alignment_faking", "potential_faking", "aligned", "hard_negative",
              "compliant_hard_negative", "genuine_compliance"]
    path.write_text(json.dumps({"labels": labels, "unique_labels": labels, "layer": 40}))
    y, classes = data.load_labels(path, "x")
    assert y.tolist() == [1, 1, 0, 0, 0, 0]
    assert classes.tolist() == labels


def test_unknown_label_names_label_dataset_and_file(tmp_path):
    path = tmp_path / "benchmark_labels.json"
    path.write_text(json.dumps({"labels": ["aligned", "sneaky"]}))
    with pytest.raises(base.InputError) as e:
        data.load_labels(path, "benchmark")
    msg = str(e.value)
    assert "'sneaky'" in msg and "benchmark" in msg and str(path) in msg


def test_npy_labels_accept_bool_and_reject_other_values(tmp_path):
    p = tmp_path / "l.npy"
    np.save(p, np.array([True, False, True]))
    y, classes = data.load_labels(p, "train")
    assert y.tolist() == [1, 0, 1] and classes.tolist() == ["alignment_faking", "aligned",
                                                            "alignment_faking"]
    np.save(p, np.array([0, 2]))
    with pytest.raises(base.InputError, match="0/1"):
        data.load_labels(p, "train")


# ---- splits and mixes -------------------------------------------------------------------
@pytest.fixture(scope="module")
def loaded(tiny_cache):
    datasets, _, _ = data.load_cache(tiny_cache, 40, list(common.DATASETS))
    return datasets


def test_splits_deterministic_disjoint_stratified(loaded):
    a = make_splits(loaded, 0.2, seed=7)
    b = make_splits(loaded, 0.2, seed=7)
    c = make_splits(loaded, 0.2, seed=8)
    for name, ds in loaded.items():
        assert np.array_equal(a[name].train, b[name].train)
        assert np.array_equal(a[name].eval, b[name].eval)
        assert not set(a[name].train) & set(a[name].eval)
        assert len(a[name].train) + len(a[name].eval) == len(ds.y)
        if common.DATASETS[name].role == "split":
            for cls in np.unique(ds.classes):
                n_cls = np.sum(ds.classes == cls)
                n_eval = np.sum(ds.classes[a[name].eval] == cls)
                assert abs(n_eval - 0.2 * n_cls) <= 1
    assert not np.array_equal(a["benchmark"].eval, c["benchmark"].eval)
    assert len(a["train"].eval) == 0 and len(a["gold_106"].train) == 0


def test_split_of_a_dataset_does_not_depend_on_the_others(loaded):
    only = {"benchmark": loaded["benchmark"]}
    full = make_splits(loaded, 0.2, seed=3)
    alone = make_splits(only, 0.2, seed=3)
    assert np.array_equal(full["benchmark"].eval, alone["benchmark"].eval)


def test_each_mix_contains_the_previous_one_and_never_eval_rows(loaded):
    splits = make_splits(loaded, 0.2, seed=1)
    prev = set()
    for step in common.STEPS:
        rows = {(n, int(i)) for n, idx in training_rows(step, splits) for i in idx}
        assert prev <= rows and prev != rows
        held = {(n, int(i)) for n, s in splits.items() for i in s.eval}
        assert not rows & held
        mix = build_mix(step, loaded, splits)
        assert mix.X.shape[0] == len(rows) == len(mix.y)
        prev = rows


def test_one_class_training_mix_is_refused(loaded):
    splits = make_splits(loaded, 0.2, seed=1)
    step = common.StepSpec(9, "only_sycophant", ("sycophant",), "?")
    with pytest.raises(base.InputError, match="one class"):
        build_mix(step, loaded, splits)


# ---- probe and metrics ------------------------------------------------------------------
def test_float64_decision_matches_pipeline_and_avoids_float32_ties(loaded):
    splits = make_splits(loaded, 0.2, seed=0)
    mix = build_mix(common.STEPS[0], loaded, splits)
    cfg = RunConfig(C=10.0, penalty="l2", max_iter=1000, cv_folds=3)
    pipe, _, _ = probe.fit(probe.make_pipeline(cfg, 0), mix.X, mix.y)
    X = loaded["gold_106"].X
    ours = probe.decision(pipe, X)
    assert ours.dtype == np.float64
    ref = pipe.decision_function(X.astype(np.float64))
    assert np.allclose(ours, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("step", [0, 3])
def test_sparse_probe_equals_dense_standardscaler_logistic_regression(loaded, step):
    """The float32 sparse solver reproduces the dense StandardScaler + lbfgs reference,
    including the out-of-distribution scores that an uncentred fit gets wrong."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    splits = make_splits(loaded, 0.2, seed=0)
    mix = build_mix(common.STEPS[step], loaded, splits)
    cfg = RunConfig(C=10.0, penalty="l2", max_iter=1000, cv_folds=3)
    pipe, converged, _ = probe.fit(probe.make_pipeline(cfg, 0), mix.X, mix.y)
    dense = make_pipeline(StandardScaler(), LogisticRegression(C=10.0, max_iter=1000))
    dense.fit(mix.X.toarray().astype(np.float64), mix.y)
    assert converged
    for name, ds, idx in eval_sets(loaded, splits):
        ours = probe.decision(pipe, ds.X[idx])
        ref = dense.decision_function(ds.X[idx].toarray().astype(np.float64))
        assert np.allclose(ours, ref, rtol=0.02, atol=0.02 * np.abs(ref).max()), name
        assert np.mean((ours >= 0) == (ref >= 0)) >= 0.97, name
        if len(np.unique(ds.y[idx])) == 2:
            assert abs(roc_auc_score(ds.y[idx], ours) - roc_auc_score(ds.y[idx], ref)) <= 0.005


def test_single_class_set_gets_no_auroc():
    s = np.array([-3.0, 0.5, 2.0])
    out = metrics.evaluate_set(s, np.ones(3, dtype=int), np.array(["alignment_faking"] * 3),
                             {"1": 1.0, "5": 0.0}, reference_neg=np.array([-1.0, 1.0]),
                             reference_name="benchmark")
    assert out["auroc"] is None and "single class" in out["auroc_note"]
    assert out["detection_rate"] == pytest.approx(2 / 3)
    assert out["recall_at_fpr"]["1"]["recall"] == pytest.approx(1 / 3)
    assert out["recall_at_fpr"]["1"]["eval_fpr"] is None
    expected = roc_auc_score([1, 1, 1, 0, 0], [-3.0, 0.5, 2.0, -1.0, 1.0])
    assert out["auroc_vs_reference_negatives"] == pytest.approx(expected)


def test_two_class_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.normal(size=300) + y
    s[:50] = 0.25  # ties
    out = metrics.evaluate_set(s, y, np.where(y == 1, "alignment_faking", "aligned"),
                             {"5": 1.0})
    assert out["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert out["accuracy"] == pytest.approx(np.mean((s >= 0) == (y == 1)))
    assert out["recall_at_fpr"]["5"]["eval_fpr"] == pytest.approx(np.mean(s[y == 0] >= 1.0))
    assert out["auroc_vs_reference_negatives"] is None


@pytest.mark.parametrize("n", [7, 100, 1000])
def test_fpr_thresholds_bound_the_training_fpr(n):
    neg = np.random.default_rng(n).normal(size=n)
    neg[: n // 3] = neg[0]  # ties
    for pct, t in probe.fpr_thresholds(neg).items():
        assert np.mean(neg >= t) <= int(pct) / 100 + 1e-12


# ---- end to end -------------------------------------------------------------------------
STEP_KEYS = {"step", "name", "training_data", "n_training_samples", "training_breakdown",
             "n_features", "train_accuracy", "cv_auroc_mean", "cv_auroc_std", "evaluation",
             "config", "data_source", "inputs", "versions", "timestamp", "run_id", "files",
             "converged", "n_nonzero_weights", "thresholds", "leakage_audit"}
EVAL_KEYS = {"n_samples", "af_samples", "accuracy", "mean_score", "detection_rate", "auroc",
             "auroc_note", "recall_at_fpr", "auroc_vs_reference_negatives", "per_class", "ci"}


def test_end_to_end_writes_every_file_with_the_schema(tiny_run):
    for step in common.STEPS:
        paths = stepfiles.output_paths(tiny_run, step)
        assert all(p.exists() for p in paths.values())
        rec = json.loads(paths["json"].read_text())
        assert STEP_KEYS <= set(rec)
        assert rec["data_source"] == "demo" and rec["step"] == step.number
        assert set(rec["evaluation"]) == set(common.EVAL_SETS)
        for name, entry in rec["evaluation"].items():
            assert EVAL_KEYS <= set(entry)
            if name in ("sycophant", "model_organism"):
                assert entry["auroc"] is None and entry["auroc_vs_reference_negatives"] is not None
            else:
                assert 0 <= entry["auroc"] <= 1
        scores = stepfiles.load_scores(paths["scores"], rec["run_id"])
        assert set(common.EVAL_SETS) <= set(scores)
        loaded = results_read.load_probe(paths["json"])
        assert loaded["run_id"] == rec["run_id"] and loaded["step"] == step.number
        assert loaded["pipeline"][-1].coef_.shape == (1, rec["n_features"])
    assert (tiny_run / "report.txt").exists()


def test_thresholds_come_from_training_negatives_only(tiny_run):
    for step in common.STEPS:
        paths = stepfiles.output_paths(tiny_run, step)
        rec = json.loads(paths["json"].read_text())
        sc = stepfiles.load_scores(paths["scores"])
        oof = sc["_oof"]
        expected = probe.fpr_thresholds(oof["score"][oof["label"] == 0])
        assert rec["thresholds"]["log_odds"] == pytest.approx(expected)
        assert len(oof["score"]) == rec["n_training_samples"]


@pytest.mark.slow
def test_rerun_gives_identical_numbers(tiny_cache, tiny_run, tmp_path):
    assert run_all.main(["--cache-dir", str(tiny_cache), "--results-dir", str(tmp_path)]
                        + FAST_FLAGS) == 0
    for step in common.STEPS:
        a = json.loads(stepfiles.output_paths(tiny_run, step)["json"].read_text())
        b = json.loads(stepfiles.output_paths(tmp_path, step)["json"].read_text())
        for key in ("evaluation", "cv_auroc_folds", "train_accuracy", "training_breakdown",
                    "top_features"):
            assert a[key] == b[key], key


def test_tiny_demo_shows_the_qualitative_finding(tiny_run):
    a = analysis.analyze(tiny_run)
    rec = a.records
    for name in ("sycophant", "model_organism"):
        assert rec[0]["evaluation"][name]["detection_rate"] <= 0.1
    assert rec[3]["evaluation"]["benchmark"]["auroc"] >= rec[0]["evaluation"]["benchmark"]["auroc"] + 0.2
    assert rec[0]["evaluation"]["gold_106"]["auroc"] >= 0.8


def test_missing_cache_exits_2_naming_the_files(tmp_path):
    (tmp_path / "layer_40").mkdir()
    r = subprocess.run([sys.executable, str(ROOT / "run_all.py"), "--cache-dir", str(tmp_path),
                        "--results-dir", str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 2
    first = r.stderr.splitlines()[0]
    assert "train_activations.npy" in first and "missing" in first
    assert "--demo" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_single_step_script_runs_alone(tiny_cache, tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "01_add_sycophant.py"), "--cache-dir",
                        str(tiny_cache), "--results-dir", str(tmp_path)] + FAST_FLAGS,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert [p.name for p in tmp_path.glob("step_*.json")] == ["step_1_add_sycophant.json"]


@pytest.mark.slow
def test_compare_shows_missing_steps_as_not_run(tiny_cache, tmp_path):
    assert run_all.main(["--cache-dir", str(tiny_cache), "--results-dir", str(tmp_path),
                         "--steps", "0", "1"] + FAST_FLAGS) == 0
    r = subprocess.run([sys.executable, str(ROOT / "compare_all_steps.py"), "--results-dir",
                        str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "not run" in r.stdout and "2 add_organisms" in r.stdout


def test_cv_folds_are_fitted_without_their_validation_rows(loaded):
    """Each out-of-fold score equals a probe fitted from scratch on the other folds."""
    splits = make_splits(loaded, 0.2, seed=0)
    cfg = RunConfig(C=10.0, penalty="l2", max_iter=1000, cv_folds=3)
    plan = probe.plan_step(common.STEPS[1], loaded, splits, cfg, seed=5)
    cv = probe.cv_summary(plan, execution.execute([plan], jobs=1)[0])
    tr, va = plan.folds[0]
    assert not set(tr) & set(va) and len(tr) + len(va) == len(plan.mix.y)
    alone, _, _ = probe.fit(probe.make_pipeline(cfg, 5), plan.mix.X[tr], plan.mix.y[tr])
    assert np.allclose(cv["oof"][va], probe.decision(alone, plan.mix.X[va]))
    full, _, _ = probe.fit(probe.make_pipeline(cfg, 5), plan.mix.X, plan.mix.y)
    assert not np.allclose(cv["oof"][va], probe.decision(full, plan.mix.X[va]))


@pytest.mark.slow
def test_parallel_workers_give_the_same_numbers_and_leave_no_files(tiny_cache, tiny_run, tmp_path):
    from pathlib import Path
    flags = [f for f in FAST_FLAGS if f not in ("--jobs", "1")]
    assert run_all.main(["--cache-dir", str(tiny_cache), "--results-dir", str(tmp_path),
                         "--jobs", "2"] + flags) == 0
    for step in common.STEPS:
        a = json.loads(stepfiles.output_paths(tiny_run, step)["json"].read_text())
        b = json.loads(stepfiles.output_paths(tmp_path, step)["json"].read_text())
        assert a["evaluation"] == b["evaluation"] and a["cv_auroc_folds"] == b["cv_auroc_folds"]
    import os
    mine = [p for p in Path("/dev/shm").glob(f"sweep-{os.getpid()}-*")] if Path("/dev/shm").is_dir() else []
    assert not mine


def test_progress_line_per_step_while_fits_run(tiny_cache, tmp_path, capsys):
    """Each step says when its fits are done (a line per step through the log; none under
    --quiet)."""
    argv = ["--cache-dir", str(tiny_cache), "--steps", "0", "1", "--jobs", "1"]
    assert run_all.main(argv + ["--results-dir", str(tmp_path / "loud")]) == 0
    out = capsys.readouterr().out
    for step in common.STEPS[:2]:
        assert re.search(rf"^step {step.number} {step.slug}: 6 fits done \(", out, re.M), out
    assert run_all.main(argv + ["--results-dir", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert "fits done" not in capsys.readouterr().out


def test_probe_reloads_from_the_scores_file_without_unpickling(tiny_run, loaded):
    """The scores file holds the probe as plain arrays (docs/REFERENCE.md: '_probe__*' keys): its decision
    is the pickled pipeline's, bit for bit, and scikit-learn's decision function."""
    X = loaded["gold_106"].X
    for step in common.STEPS:
        paths = stepfiles.output_paths(tiny_run, step)
        rec = json.loads(paths["json"].read_text())
        portable = stepfiles.LinearProbe.from_scores(
            stepfiles.load_scores(paths["scores"], rec["run_id"]))
        pipe = results_read.load_probe(paths["json"])["pipeline"]
        assert np.array_equal(portable.feature_ids, np.arange(rec["n_features"]))
        assert np.array_equal(portable.decision(X), probe.decision(pipe, X))
        assert np.allclose(portable.decision(X), pipe.decision_function(X.astype(np.float64)),
                           rtol=1e-9, atol=1e-9)
        assert np.allclose(portable.weights * portable.scale, pipe[-1].coef_.ravel())
