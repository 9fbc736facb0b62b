"""Controls of the sweep: fixed budget, OOD-only step, transfer matrix, orderings, grid,
loss weighting, extra eval sets and dask execution.

Runs share results where they can (one module-scoped run holds the main sweep with step 4, the
budget arm, the transfer matrix and the orderings). The report stage of run_all.py is reduced to
report.txt here: figures and the dashboard have their own tests and cost seconds per run.
"""
import copy
import io
import itertools
import json
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from sweeplib import analysis
import common
from sweeplib import probe
import run_all
from conftest import FAST_FLAGS, ROOT, TINY
from sweeplib import splits
from sweeplib import stepfiles
from sweeplib.controls import cell_dir
from sweeplib import demo
from sweeplib import outputs
from sweeplib.report import render_console

OOD = ("sycophant", "model_organism", "benchmark")
FULL_MIX = ("train",) + OOD
BUDGET = 120
FOLDS = ["--cv-folds", "3"]      # every run compared with the `controls` main sweep uses these


# ---- helpers -------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def text_report_only():
    """run_all.py writes report.txt only (no figures, no dashboard) in this module."""
    def write_outputs(results_dir, a, formats=("txt",), **_):
        return [outputs.write_report(results_dir, fmt_name="txt", result=a)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(outputs, "write_outputs", write_outputs)
        yield


def run(cache, results, *extra, flags=FAST_FLAGS):
    """run_all.main on a cache and results folder; returns the exit code."""
    return run_all.main(["--cache-dir", str(cache), "--results-dir", str(results)]
                        + list(flags) + [str(x) for x in extra])


def step_json(folder, k):
    """The record of step k in a results folder."""
    paths = sorted(Path(folder).glob(f"step_{k}_*.json"))
    assert len(paths) == 1, f"expected one step_{k}_*.json in {folder}, found {paths}"
    return json.loads(paths[0].read_text())


def step_records(folder):
    """{step number: record} of every step JSON in a folder."""
    return {int(p.name.split("_")[1]): json.loads(p.read_text())
            for p in sorted(Path(folder).glob("step_*_*.json"))}


def snapshot(folder):
    """{relative path: bytes} of every file under folder."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def numeric_leaves(obj, path=""):
    """{path: value} of every number (or None) in a JSON-like object."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(numeric_leaves(v, f"{path}/{k}"))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(numeric_leaves(v, f"{path}[{i}]"))
    elif obj is None or isinstance(obj, (int, float)):
        out[path] = obj
    return out


def differences(a, b, tol):
    """Paths where two JSON-like objects differ by more than tol (or in structure)."""
    la, lb = numeric_leaves(a), numeric_leaves(b)
    out = [p for p in sorted(set(la) ^ set(lb))]
    for p in sorted(set(la) & set(lb)):
        x, y = la[p], lb[p]
        if (x is None) != (y is None) or (x is not None and abs(x - y) > tol):
            out.append(f"{p}: {x} vs {y}")
    return out


def make_mix(y, source, classes=None):
    """A Mix with dummy features for the weighting and subsampling helpers."""
    y = np.asarray(y)
    classes = np.asarray(classes if classes is not None
                         else np.where(y == 1, "alignment_faking", "aligned"))
    return splits.Mix(sp.csr_matrix((len(y), 3), dtype=np.float32), y,
                      np.asarray(source).astype(str), classes)


# ---- shared runs ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def controls(tiny_cache, tmp_path_factory):
    """Main sweep with step 4, then (--resume) the budget arm, transfer matrix and orderings.

    Returns (results dir, snapshot of the main step files taken before the controls ran).
    """
    out = tmp_path_factory.mktemp("controls")
    steps = ["--steps", 0, 1, 2, 3, 4] + FOLDS      # ~40 steps are fitted in this fixture
    assert run(tiny_cache, out, *steps) == 0
    before = {k: v for k, v in snapshot(out).items() if k.startswith("step_")}
    assert run(tiny_cache, out, *steps, "--resume", "--budget", BUDGET, "--transfer",
               "--orderings", "all") == 0
    return out, before


@pytest.fixture(scope="module")
def controls_analysis(controls):
    """analysis.analyze of the controls folder and its console comparison text."""
    a = analysis.analyze(controls[0])
    return a, render_console(a, stream=io.StringIO())


@pytest.fixture(scope="module")
def two_layer_cache(tmp_path_factory):
    """The tiny demo cache with layers 40 and 53."""
    root = tmp_path_factory.mktemp("cache2")
    demo.generate(root, layers=(40, 53), verbose=False, **TINY)
    return root


# ---- fixed budget: helpers -----------------------------------------------------------------
def test_subsample_stratified_exact_n_proportional_and_seeded():
    rng = np.random.default_rng(0)
    strata = rng.permutation(np.array(["a"] * 53 + ["b"] * 31 + ["c"] * 11 + ["d"] * 5))
    counts = {s: int((strata == s).sum()) for s in "abcd"}
    for n in (1, 17, 50, 99, 100):
        rows = splits.subsample_stratified(strata, n, seed=3)
        assert len(rows) == n and len(np.unique(rows)) == n
        assert np.all(np.diff(rows) > 0) and rows.min() >= 0 and rows.max() < len(strata)
        for s, c in counts.items():
            got = int((strata[rows] == s).sum())
            assert abs(got - c * n / len(strata)) < 1, (n, s, got)
    a = splits.subsample_stratified(strata, 40, seed=3)
    assert np.array_equal(a, splits.subsample_stratified(strata, 40, seed=3))
    assert not np.array_equal(a, splits.subsample_stratified(strata, 40, seed=4))
    assert np.array_equal(splits.subsample_stratified(strata, len(strata), seed=1),
                          np.arange(len(strata)))


def test_sample_weights_equal_sources_balanced_classes_and_none():
    source = ["train"] * 60 + ["sycophant"] * 10 + ["benchmark"] * 30
    y = [0] * 40 + [1] * 20 + [1] * 10 + [0] * 24 + [1] * 6
    mix = make_mix(y, source)
    assert probe.sample_weights(mix) is None
    assert probe.sample_weights(mix, None, "proportional") is None

    w = probe.sample_weights(mix, source_weight="equal")
    assert w.shape == (100,) and np.all(w > 0) and np.isclose(w.mean(), 1.0)
    totals = [w[mix.source == s].sum() for s in ("train", "sycophant", "benchmark")]
    assert np.allclose(totals, totals[0]), totals

    w = probe.sample_weights(mix, class_weight="balanced")
    assert np.isclose(w.mean(), 1.0)
    assert np.isclose(w[mix.y == 0].sum(), w[mix.y == 1].sum())

    even = make_mix([0, 1] * 10, ["a"] * 10 + ["b"] * 10)   # already equal: nothing to weigh
    assert probe.sample_weights(even, "balanced", "equal") is None


# ---- fixed budget: the arm -----------------------------------------------------------------
def test_budget_arm_every_step_has_n_samples_in_full_mix_proportions(controls):
    out, _ = controls
    arm = out / "arm_budget"
    main_recs, arm_recs = step_records(out), step_records(arm)
    assert sorted(arm_recs) == [0, 1, 2, 3, 4]
    for k, rec in arm_recs.items():
        full = main_recs[k]
        assert rec["n_training_samples"] == BUDGET, k
        assert rec["config"]["budget_n"] == BUDGET
        assert rec["sample_weighting"]["budget_n"] == BUDGET
        assert full["n_training_samples"] > BUDGET
        bd, full_bd = rec["training_breakdown"], full["training_breakdown"]
        assert set(bd) <= set(full_bd), (k, bd.keys())
        assert sum(v["n"] for v in bd.values()) == BUDGET
        n_full = full["n_training_samples"]
        for src, fb in full_bd.items():
            got = bd.get(src, {"n": 0, "classes": {}})
            share = fb["n"] * BUDGET / n_full
            assert abs(got["n"] - share) < len(fb["classes"]), (k, src, got["n"], share)
            for cls, c in fb["classes"].items():       # strata: source x fine class
                quota = c * BUDGET / n_full
                assert abs(got["classes"].get(cls, 0) - quota) < 1, (k, src, cls, quota)


def test_budget_arm_leaves_main_steps_untouched_and_shows_in_analysis(controls,
                                                                     controls_analysis):
    out, before = controls
    after = {k: v for k, v in snapshot(out).items() if k.startswith("step_")}
    assert after.keys() == before.keys()
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, f"main step files rewritten by the controls run: {changed}"
    for rec in step_records(out).values():
        assert rec["config"]["budget_n"] is None
    a, _ = controls_analysis
    assert a.arms["arm_budget"]["budget_n"] == BUDGET


def test_budget_base_equals_step0_size(tiny_cache, tmp_path):
    assert run(tiny_cache, tmp_path, "--steps", 0, 3, "--budget", "base") == 0
    n0 = step_json(tmp_path, 0)["n_training_samples"]
    assert step_json(tmp_path, 3)["n_training_samples"] > n0
    for k in (0, 3):
        assert step_json(tmp_path / "arm_budget", k)["n_training_samples"] == n0


def test_budget_larger_than_a_mix_is_exit_2(tiny_cache, tmp_path, capsys):
    rc = run(tiny_cache, tmp_path, "--steps", 0, "--budget", 100000)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: --budget") and "100000" in err, err
    assert not list((tmp_path / "arm_budget").glob("step_*"))


# ---- OOD-only step -------------------------------------------------------------------------
def test_step4_trains_on_ood_sources_only(controls):
    out, _ = controls
    rec = step_json(out, 4)
    assert rec["name"] == "ood_only"
    assert set(rec["training_breakdown"]) == set(OOD)
    assert "train" not in rec["training_data"]
    assert rec["n_training_samples"] == sum(rec["split_sizes"][s]["train"] for s in OOD)
    sources = stepfiles.load_scores(out / "step_4_scores.npz", rec["run_id"])["_oof"]["source"]
    assert len(sources) == rec["n_training_samples"]
    assert set(sources.tolist()) == set(OOD)


def test_step4_in_analysis_and_console(controls_analysis):
    a, text = controls_analysis
    assert 4 in a.steps and 4 not in a.missing
    assert [p["name"] for p in a.progression if p["step"] == 4] == ["ood_only"]
    for s in a.sets.values():
        assert 4 in s["rows"]
        assert 4 not in s["deltas"]            # a control, not a step of the chain
    assert "4 ood_only" in text


def test_04_script_runs_step4(tiny_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["04_ood_only.py", "--cache-dir", str(tiny_cache),
                                      "--results-dir", str(tmp_path)] + FAST_FLAGS)
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / "04_ood_only.py"), run_name="__main__")
    assert e.value.code == 0
    assert set(step_json(tmp_path, 4)["training_breakdown"]) == set(OOD)


# ---- transfer matrix -----------------------------------------------------------------------
def test_transfer_matrix_rows_columns_and_notes(controls, controls_analysis):
    out, _ = controls
    doc = json.loads((out / "transfer_matrix.json").read_text())
    expected = [f"only_{s}" for s in FULL_MIX] + [f"all_but_{s}" for s in FULL_MIX]
    assert sorted(doc["train_mixes"]) == sorted(expected)
    assert set(doc["cells"]) == set(expected)
    assert doc["eval_sets"] == ["gold_106", "sycophant", "model_organism", "benchmark"]
    for mix in expected:
        assert sorted(doc["training"][mix]) == sorted(
            [mix[5:]] if mix.startswith("only_") else [s for s in FULL_MIX if s != mix[8:]])
    for src in ("sycophant", "model_organism"):               # all-AF in the demo
        cell = doc["cells"][f"only_{src}"]
        assert set(cell) == {"note"} and "AF" in cell["note"], cell
    for mix, cell in doc["cells"].items():
        if "note" in cell:
            continue
        assert set(cell) == set(doc["eval_sets"]), mix
        for ev, c in cell.items():
            assert c["value"] is not None and c["value"] == c[c["headline"]], (mix, ev)
    a, _ = controls_analysis
    assert a.transfer["cells"] == doc["cells"]


def test_transfer_diagonal_and_all_but_train_is_step4(controls):
    out, _ = controls
    cells = json.loads((out / "transfer_matrix.json").read_text())["cells"]
    bench, train = cells["only_benchmark"]["benchmark"], cells["only_train"]["benchmark"]
    assert bench["headline"] == train["headline"] == "auroc"
    assert bench["auroc"] > train["auroc"] + 0.15, (bench["auroc"], train["auroc"])
    assert cells["only_train"]["gold_106"]["auroc"] > cells["only_benchmark"]["gold_106"]["auroc"]

    doc = json.loads((out / "transfer_matrix.json").read_text())
    step4 = step_json(out, 4)
    assert sorted(doc["training"]["all_but_train"]) == sorted(step4["training_data"])
    for ev, c in cells["all_but_train"].items():
        e = step4["evaluation"][ev]
        for m in ("auroc", "auroc_vs_reference_negatives", "detection_rate"):
            assert (c[m] is None) == (e[m] is None)
            if c[m] is not None:
                assert abs(c[m] - e[m]) < 1e-9, (ev, m)


# ---- orderings -----------------------------------------------------------------------------
def ordering_records(out):
    root = out / "orderings"
    return {d.name: step_records(d) for d in sorted(root.iterdir()) if d.is_dir()}


def test_orderings_six_folders_six_sequences_same_final_mix(controls):
    out, _ = controls
    orders = ordering_records(out)
    assert sorted(orders) == sorted("-".join(p) for p in itertools.permutations(OOD))
    sequences = set()
    for name, recs in orders.items():
        assert sorted(recs) == [0, 1, 2, 3], name
        mixes = [set(recs[k]["training_data"]) for k in range(4)]
        assert mixes[0] == {"train"}
        added = tuple(next(iter(mixes[k] - mixes[k - 1])) for k in (1, 2, 3))
        assert all(len(mixes[k] - mixes[k - 1]) == 1 for k in (1, 2, 3))
        assert "-".join(added) == name
        sequences.add(added)
        assert mixes[3] == set(FULL_MIX)
        assert recs[3]["training_breakdown"] == step_json(out, 3)["training_breakdown"], name
    assert len(sequences) == 6


def test_orderings_last_step_numbers_identical(controls):
    """Same final mix + same seed => same numbers, whichever order the sources came in."""
    out, _ = controls
    orders = ordering_records(out)
    keys = ("evaluation", "thresholds", "cv_auroc_mean", "cv_auroc_folds", "train_accuracy")
    ref = {k: step_json(out, 3)[k] for k in keys}
    bad = {}
    for name, recs in orders.items():
        diff = sorted(differences(ref, {k: recs[3][k] for k in keys}, 1e-9),
                      key=lambda d: not d.startswith("/evaluation"))
        if diff:
            bad[name] = diff[:3] + [f"... {len(diff)} differences"]
    assert not bad, bad


# ---- grid ----------------------------------------------------------------------------------
def test_grid_cells_own_folders_main_sweep_untouched(two_layer_cache, tmp_path, capsys):
    out = tmp_path / "results"
    assert run(two_layer_cache, out, "--steps", 0, 3) == 0          # the main sweep
    before = snapshot(out)
    assert any(k.startswith("step_3_") for k in before) and "report.txt" in before
    rc = run(two_layer_cache, out, "--steps", 0, "--layers", 40, 53, 99, "-C", 0.1, 10,
             "--penalty", "l1", "l2", "--max-iter", 50)
    err = capsys.readouterr().err
    assert rc == 0
    assert "layer_99" in err and "skipped" in err, err
    assert not (out / "grid" / "layer_99").exists()

    after = snapshot(out)
    assert {k: after[k] for k in before} == before, "grid changed the main sweep's files"
    new = sorted(set(after) - set(before))
    assert all(k.startswith("grid/") or k in ("grid_summary.json",
                                              ".sweep-owned/grid_summary.json") for k in new), new

    summary = json.loads((out / "grid_summary.json").read_text())["cells"]
    cells = [(L, C, p) for L in (40, 53) for C in (0.1, 10.0) for p in ("l1", "l2")]
    assert sorted((r["layer"], r["C"], r["penalty"]) for r in summary) == sorted(cells)
    recs = {}
    for L, C, p in cells:
        folder = cell_dir(out, L, C, p)
        assert folder == out / "grid" / f"layer_{L}" / f"C_{C:g}" / f"penalty_{p}"
        rec = step_json(folder, 0)
        assert (rec["layer"], rec["config"]["layer"], rec["config"]["C"],
                rec["config"]["penalty"]) == (L, L, C, p)
        row = next(r for r in summary if (r["layer"], r["C"], r["penalty"]) == (L, C, p))
        assert out / row["path"] == folder
        assert row["n_nonzero_weights"] == rec["n_nonzero_weights"]
        recs[L, C, p] = rec
    for L in (40, 53):
        assert recs[L, 0.1, "l1"]["n_nonzero_weights"] < recs[L, 0.1, "l2"]["n_nonzero_weights"]
        assert recs[L, 10.0, "l1"]["n_nonzero_weights"] <= recs[L, 10.0, "l2"]["n_nonzero_weights"]
        assert recs[L, 0.1, "l2"]["top_features"] != recs[L, 10.0, "l2"]["top_features"]
    assert recs[40, 10.0, "l2"]["top_features"] != recs[53, 10.0, "l2"]["top_features"]

    capsys.readouterr()
    assert len(analysis.grid_summary(out)["cells"]) == len(cells)          # all current
    assert "not shown" not in capsys.readouterr().err
    main = analysis.analyze_folder(out)       # the grid ran with --max-iter 50, the sweep not:
    assert analysis.grid_summary(out, main)["cells"] == []      # not shown beside it
    assert "its config 'max_iter' is 50, the main sweep's 1000" in capsys.readouterr().err
    main.config = {**main.config, "max_iter": 50}       # a sweep with the grid's settings
    assert len(analysis.grid_summary(out, main)["cells"]) == len(cells)
    assert "not shown" not in capsys.readouterr().err
    other = copy.copy(main)                             # a sweep rerun with another seed
    other.config = {**main.config, "seed": main.config["seed"] + 1}
    assert analysis.grid_summary(out, other)["cells"] == []
    assert "its config 'seed' is" in capsys.readouterr().err
    assert len(analysis.grid_summary(out, other, allow_mixed=True)["cells"]) == len(cells)
    other = copy.copy(main)                             # ... or on other input files
    other.inputs = {name: "0" * 64 for name in main.inputs}
    kept = analysis.grid_summary(out, other)["cells"]
    assert sorted(r["layer"] for r in kept) == [53] * 4     # other layers: other files anyway
    assert "computed from other input files" in capsys.readouterr().err
    doc = json.loads((out / "grid_summary.json").read_text())
    doc["cells"][0]["cv_auroc"] = 0.5                   # a summary that no longer matches
    (out / "grid_summary.json").write_text(json.dumps(doc))
    shutil.rmtree(out / doc["cells"][1]["path"])        # a cell whose folder is gone
    kept = analysis.grid_summary(out)["cells"]
    assert [r["path"] for r in kept] == [r["path"] for r in doc["cells"][2:]]
    err = capsys.readouterr().err
    assert f"cell {doc['cells'][0]['path']}: its folder holds other results" in err
    assert f"cell {doc['cells'][1]['path']}: its folder has no step files" in err


# ---- loss weighting ------------------------------------------------------------------------
@pytest.mark.parametrize("flag, value, key", [("--class-weight", "balanced", "class_weight"),
                                              ("--source-weight", "equal", "source_weight")])
def test_weighting_recorded_and_changes_numbers(tiny_cache, controls, tmp_path, flag, value,
                                                key):
    assert run(tiny_cache, tmp_path, "--steps", 3, flag, value, *FOLDS) == 0
    rec, default = step_json(tmp_path, 3), step_json(controls[0], 3)
    assert rec["config"][key] == value and rec["sample_weighting"][key] == value
    assert default["config"][key] in (None, "proportional")
    assert rec["n_training_samples"] == default["n_training_samples"]
    moved = [n for n in rec["evaluation"]
             if abs(rec["evaluation"][n]["mean_score"] - default["evaluation"][n]["mean_score"])
             > 1e-4]
    assert moved, "weighting left every eval set's scores unchanged"
    assert rec["top_features"] != default["top_features"]


# ---- extra eval set ------------------------------------------------------------------------
@pytest.fixture
def forget_extra_eval():
    """--extra-eval sets are passed explicitly (data.dataset_table): the process-wide dataset
    table is never changed by a run."""
    known = dict(common.DATASETS)
    yield
    assert common.DATASETS == known


def add_extra_set(cache):
    layer = cache / "layer_40"
    shutil.copy(layer / "benchmark_activations.npy", layer / "extra_activations.npy")
    shutil.copy(layer / "benchmark_labels.json", layer / "extra_labels.json")
    return np.load(layer / "extra_activations.npy", mmap_mode="r").shape[0]


def test_extra_eval_evaluated_whole_never_trained(cache_copy, tmp_path, capsys,
                                                  forget_extra_eval):
    n_rows = add_extra_set(cache_copy)
    assert run(cache_copy, tmp_path, "--extra-eval", "extra") == 0
    recs = step_records(tmp_path)
    assert sorted(recs) == [0, 1, 2, 3]
    for k, rec in recs.items():
        assert rec["evaluation"]["extra"]["n_samples"] == n_rows, k
        assert "extra" not in rec["training_breakdown"] and "extra" not in rec["training_data"]
        assert rec["config"]["extra_eval"] == ["extra"]
        assert rec["split_sizes"]["extra"] == {"train": 0, "eval": n_rows}
    report = (tmp_path / "report.txt").read_text()
    assert "extra (extra eval set)" in report
    a = analysis.analyze(tmp_path)
    assert "extra" in a.sets
    assert "extra (extra eval set)" in render_console(a, io.StringIO())


def test_extra_eval_does_not_leak_into_later_runs(cache_copy, tiny_cache, tmp_path,
                                                  forget_extra_eval):
    """--extra-eval of one run_all.main call must not bind the next call in the process."""
    add_extra_set(cache_copy)
    assert run(cache_copy, tmp_path / "a", "--steps", 0, "--extra-eval", "extra") == 0
    assert run(tiny_cache, tmp_path / "b", "--steps", 0) == 0
    assert "extra" not in step_json(tmp_path / "b", 0)["evaluation"]


# ---- dask ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_dask_scheduler_matches_local_run(tiny_cache, controls, tmp_path):
    distributed = pytest.importorskip(
        "dask.distributed", reason="dask[distributed] not installed (dev dependency)")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        flags = [f for f in FAST_FLAGS if f not in ("--jobs", "1")] + ["--jobs", "2"]
        rc = run(tiny_cache, tmp_path, "--steps", 0, 3, *FOLDS, "--dask-scheduler",
                 cluster.scheduler_address, flags=flags)
        prefixes = list(cluster.scheduler.task_prefixes)
    assert rc == 0
    assert any("fit_task" in p for p in prefixes), f"no fit ran on the cluster: {prefixes}"
    for k in (0, 3):
        rec, local = step_json(tmp_path, k), step_json(controls[0], k)    # local, --jobs 1
        assert rec["config"]["dask_scheduler"] == cluster.scheduler_address
        assert rec["evaluation"] == local["evaluation"], k
        assert rec["cv_auroc_folds"] == local["cv_auroc_folds"], k


def test_dask_scheduler_without_dask_is_exit_2(tiny_cache, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    rc = run(tiny_cache, tmp_path, "--dask-scheduler", "tcp://127.0.0.1:9")
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: --dask-scheduler") and "not installed" in err, err
    assert not list(tmp_path.glob("step_*"))
