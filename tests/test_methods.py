"""The method arms (methods.py, methods_run.py): each family against scikit-learn or a closed
form on tiny data, the representations' arithmetic, blindness to eval labels, and the files
a run writes (a `--methods lr` run's step files are the default run's)."""
import json
from dataclasses import replace

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler, normalize

import common
import run_all
from conftest import FAST_FLAGS
from sweeplib import cause, config, methods, methods_run, pipeline, stepfiles
from sweeplib.base import InputError
from sweeplib.config import RunConfig


def _tiny(seed=0, n=(40, 30), p=12, shift=False):
    """Two datasets' worth of rows in a representation, labels and weights."""
    rng = np.random.default_rng(seed)
    parts, ys = [], []
    for g, m in enumerate(n):
        X = rng.gamma(1.0, 1.0, size=(m, p)) * (rng.random((m, p)) < 0.5)
        y = (rng.random(m) < 0.5).astype(int)
        X[y == 1, :3] += 1.0 + g
        sh = rng.normal(size=p) if shift else None
        parts.append((methods.RepData(sp.csr_matrix(X.astype(np.float32)), sh),
                      np.arange(m)))
        ys.append(y)
    y = np.concatenate(ys)
    w = rng.uniform(0.5, 1.5, size=len(y))
    return methods.Rows(parts), y, w / w.mean()


def _dense(rows):
    """z of Rows, dense float64."""
    return np.vstack([r.X[idx].toarray().astype(np.float64)
                      - (0 if r.shift is None else r.shift) for r, idx in rows.parts])


def _cfg():
    return RunConfig.from_args(config.build_parser("x").parse_args([]))


def test_rows_products_and_moments_match_the_dense_arithmetic():
    rows, y, w = _tiny(shift=True)
    Z = _dense(rows)
    rng = np.random.default_rng(1)
    v, r = rng.normal(size=Z.shape[1]), rng.normal(size=Z.shape[0])
    np.testing.assert_allclose(rows @ v, Z @ v, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rows.T @ r, Z.T @ r, rtol=1e-5, atol=1e-5)
    s1, s2 = rows.weighted_sums(w)
    np.testing.assert_allclose(s1, Z.T @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s2, (Z ** 2).T @ w, rtol=1e-5, atol=1e-5)
    sub = rows.subset(np.array([1, 5, 39, 40, 60]))
    np.testing.assert_allclose(_dense(sub), Z[[1, 5, 39, 40, 60]], rtol=1e-6)


def test_massmean_is_the_weighted_difference_of_class_means_thresholded_at_the_midpoint():
    rows, y, w = _tiny()
    Z = _dense(rows)
    fit = methods.fit_massmean(methods.Train(rows, y, w, []), _cfg())
    m1 = np.average(Z[y == 1], axis=0, weights=w[y == 1])
    m0 = np.average(Z[y == 0], axis=0, weights=w[y == 0])
    np.testing.assert_allclose(fit.w, m1 - m0, rtol=1e-5)
    assert fit.score(methods.Rows([(methods.RepData(sp.csr_matrix((m1 + m0) / 2)),
                                    np.arange(1))]))[0] == pytest.approx(0, abs=1e-4)


def _sklearn_lr(Z, y, w, C):
    """Dense reference: StandardScaler + LogisticRegression(C), the reference probe."""
    sc = StandardScaler().fit(Z)
    clf = LogisticRegression(C=C, max_iter=10000, tol=1e-10).fit(sc.transform(Z), y,
                                                                 sample_weight=w)
    return clf.decision_function(sc.transform(Z))


def test_lr_on_a_shifted_representation_matches_scikit_learn():
    rows, y, w = _tiny(shift=True)
    cfg = replace(_cfg(), tol=1e-10, max_iter=10000)
    fit = methods.fit_lr(methods.Train(rows, y, w, []), cfg)
    np.testing.assert_allclose(fit.score(rows), _sklearn_lr(_dense(rows), y, w, cfg.C),
                               rtol=1e-3, atol=1e-3)


def test_ksparse_ranks_on_the_mix_and_fits_the_reference_lr_on_the_top_k(monkeypatch):
    rows, y, w = _tiny(p=30)
    Z = _dense(rows)
    folds = [(np.arange(0, 70, 2), np.arange(1, 70, 2)), (np.arange(1, 70, 2), np.arange(0, 70, 2))]
    monkeypatch.setattr(methods, "K_GRID", (2, 5))
    cfg = replace(_cfg(), tol=1e-10, max_iter=10000)
    fit = methods.fit_ksparse(methods.Train(rows, y, w, folds), cfg)

    def order(idx):
        """Features by |weighted mean difference| / pooled weighted SD on rows idx."""
        stats = []
        for c in (0, 1):
            m = idx[y[idx] == c]
            mu = np.average(Z[m], axis=0, weights=w[m])
            stats.append((mu, np.average((Z[m] - mu) ** 2, axis=0, weights=w[m])))
        d = np.abs(stats[1][0] - stats[0][0]) / np.sqrt((stats[1][1] + stats[0][1]) / 2)
        return np.argsort(-np.nan_to_num(d), kind="stable")

    cv = {}
    for k in (2, 5):
        aucs = []
        for tr, va in folds:
            cols = np.sort(order(tr)[:k])
            sc = StandardScaler().fit(Z[np.ix_(tr, cols)])
            clf = LogisticRegression(C=cfg.C, max_iter=10000, tol=1e-10).fit(
                sc.transform(Z[np.ix_(tr, cols)]), y[tr], sample_weight=w[tr])
            aucs.append(roc_auc_score(y[va], clf.decision_function(
                sc.transform(Z[np.ix_(va, cols)]))))
        cv[k] = np.mean(aucs)
    best = max((2, 5), key=lambda k: (cv[k], -k))
    assert fit.record["k"] == best
    cols = np.sort(order(np.arange(len(y)))[:best])
    assert fit.record["features"] == cols.tolist()
    assert np.count_nonzero(fit.w) <= best
    np.testing.assert_allclose(fit.score(rows), _sklearn_lr(Z[:, cols], y, w, cfg.C),
                               rtol=1e-3, atol=1e-3)


def test_lrcv_picks_the_c_of_the_best_mean_fold_auroc(monkeypatch):
    rows, y, w = _tiny(p=20, shift=True)
    Z = _dense(rows)
    folds = [(np.arange(0, 70, 2), np.arange(1, 70, 2)), (np.arange(1, 70, 2), np.arange(0, 70, 2))]
    monkeypatch.setattr(methods, "C_GRID", (1e-3, 1.0, 100.0))
    cfg = replace(_cfg(), tol=1e-10, max_iter=10000)
    fit = methods.fit_lrcv(methods.Train(rows, y, w, folds), cfg)
    cv = {}
    for C in (1e-3, 1.0, 100.0):
        aucs = []
        for tr, va in folds:
            sc = StandardScaler().fit(Z[tr])
            clf = LogisticRegression(C=C, max_iter=10000, tol=1e-10).fit(
                sc.transform(Z[tr]), y[tr], sample_weight=w[tr])
            aucs.append(roc_auc_score(y[va], clf.decision_function(sc.transform(Z[va]))))
        cv[C] = np.mean(aucs)
    for C in cv:
        assert fit.record["cv_auroc"][f"{C:g}"] == pytest.approx(cv[C], abs=0.02)
    assert fit.record["C"] == max(cv, key=lambda C: (fit.record["cv_auroc"][f"{C:g}"], -C))


def test_representations_rownorm_and_srcstd(tiny_cache):
    cfg = RunConfig.from_args(config.build_parser("x").parse_args(
        ["--cache-dir", str(tiny_cache), "--quiet"]))
    with pipeline.prepare(cfg, list(common.STEPS), audit=False) as ctx:
        rn = methods.rep_rownorm(ctx.datasets, ctx.cfg)
        ss = methods.rep_srcstd(ctx.datasets, ctx.cfg)
        assert methods.rep_mean(ctx.datasets, ctx.cfg) is None       # no mean-pooled files
        for n, d in ctx.datasets.items():
            X = d.X.toarray().astype(np.float64)
            np.testing.assert_allclose(rn[n].X.toarray(), normalize(X), rtol=1e-5, atol=1e-6)
            z = _dense(methods.Rows([(ss[n], np.arange(X.shape[0]))]))
            sd = X.std(axis=0)
            keep = sd > 1e-6
            np.testing.assert_allclose(z[:, keep], ((X[:, keep] - X[:, keep].mean(axis=0))
                                                    / sd[keep]), rtol=1e-4, atol=1e-4)


def test_no_family_sees_eval_labels(tiny_cache):
    """Scrambling every eval label (gold_106, the held-out rows of the split sets) after the
    split leaves every arm's scores unchanged."""
    cfg = RunConfig.from_args(config.build_parser("x").parse_args(
        ["--cache-dir", str(tiny_cache), "--quiet", "--jobs", "1"]))
    arms = methods.parse_methods(["lr", "massmean", "ksparse+rownorm", "lrcv", "lr+srcstd",
                                  "massmean+srcstd", "lr+rownorm"])[1:]
    steps = list(common.STEPS)
    with pipeline.prepare(cfg, steps, audit=False) as ctx:
        splits = ctx.splits()

        def scores():
            jobs = methods_run.jobs_for(ctx, steps, ctx.cfg)
            out = []
            for arm in arms:
                rep = methods.REPRESENTATIONS[arm.representation].build(ctx.datasets, ctx.cfg)
                for lin in methods_run.fit_arm(ctx, arm, rep, jobs):
                    for name in ("gold_106", "benchmark"):
                        idx = splits[name].eval
                        out.append(lin.score(methods.stack(rep, [(name, idx)])))
            return out
        before = scores()
        rng = np.random.default_rng(0)
        for name, d in ctx.datasets.items():
            idx = splits[name].eval
            d.y[idx] = rng.permutation(d.y[idx])
            d.y[idx[: len(idx) // 2]] = 1 - d.y[idx[: len(idx) // 2]]
        ctx.fits.clear()
        after = scores()
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_parse_methods():
    assert [m.name for m in methods.parse_methods(["lr", "massmean+raw", "lr"])] == [
        "lr", "massmean"]
    assert methods.parse_method("massmean+srcstd").transductive
    for bad in (["massmean"], ["lr", "svm"], ["lr", "lr+pca"]):
        with pytest.raises(InputError, match="--methods"):
            methods.parse_methods(bad)


# ---- end to end -------------------------------------------------------------------------
def _volatile_free(folder, step):
    """A step's record, scores and probe coefficients without what differs between runs."""
    paths = stepfiles.output_paths(folder, step)
    rec = json.loads(paths["json"].read_text())
    scores = stepfiles.load_scores(paths["scores"], rec["run_id"])
    for key in ("run_id", "timestamp", "files"):
        rec.pop(key)
    pipe = joblib.load(paths["probe"])["pipeline"]
    return rec, scores, pipe[-1].coef_, pipe[-1].intercept_


def test_methods_lr_writes_the_default_runs_step_files_and_no_method_files(tiny_run, tiny_cache,
                                                                          tmp_path):
    out = tmp_path / "lr"
    assert run_all.main(["--cache-dir", str(tiny_cache), "--results-dir", str(out),
                         "--methods", "lr"] + FAST_FLAGS) == 0
    assert not any((out / f).exists() for f in methods_run.FILES.values())
    for step in common.STEPS:
        a, b = _volatile_free(tiny_run, step), _volatile_free(out, step)
        assert a[0] == b[0]
        assert a[1].keys() == b[1].keys()
        for name in a[1]:
            for key in a[1][name]:
                np.testing.assert_array_equal(a[1][name][key], b[1][name][key])
        np.testing.assert_array_equal(a[2], b[2])
        np.testing.assert_array_equal(a[3], b[3])
    v = json.loads((out / "verdict.json").read_text())
    assert v["answer"] == "inconclusive" and "not tested" in v["answer_evidence"]["sentence"]


def test_default_run_writes_the_method_arms_and_the_answer(tiny_run):
    doc = json.loads((tiny_run / "methods.json").read_text())
    names = [m["name"] for m in doc["methods"]]
    assert names == [m for m in methods.DEFAULT_METHODS if m != "lr" and "+mean" not in m]
    assert [s["name"] for s in doc["skipped"]] == ["massmean+mean", "ksparse+mean"]
    with np.load(tiny_run / "methods_scores.npz") as z, \
            np.load(tiny_run / "methods_probes.npz") as pz:
        for step in common.STEPS:
            rec = json.loads(stepfiles.output_paths(tiny_run, step)["json"].read_text())
            assert doc["steps"][str(step.number)]["run_id"] == rec["run_id"]
            sc = stepfiles.load_scores(stepfiles.output_paths(tiny_run, step)["scores"],
                                       rec["run_id"])
            for name in common.EVAL_SETS:
                np.testing.assert_array_equal(z[f"{step.number}|{name}|row"], sc[name]["row"])
                for arm in names:
                    assert z[f"{arm}|{step.number}|{name}"].shape == sc[name]["row"].shape
            for arm in names:
                assert pz[f"{arm}|{step.number}|w"].shape == (rec["n_features"],)
        assert "rep|srcstd|train|sd" in pz.files
    v = json.loads((tiny_run / "verdict.json").read_text())
    assert v["answer"] in cause.ANSWERS and v["outcome"]
    assert v["answer_evidence"]["sentence"] == v["answer_sentence"]
    report = (tiny_run / "report.txt").read_text()
    assert f"ANSWER: {v['answer']}" in report and "vs lr" in report
    assert "ANSWER: " in (tiny_run / "dashboard.html").read_text() or \
        '"answer"' in (tiny_run / "dashboard.html").read_text()


def test_method_arms_of_another_run_are_not_combined(tiny_cache, tmp_path, capsys):
    out = tmp_path / "r"
    assert run_all.main(["--cache-dir", str(tiny_cache), "--results-dir", str(out),
                         "--methods", "lr", "massmean"] + FAST_FLAGS) == 0
    assert "not tested" not in json.loads((out / "verdict.json").read_text())[
        "answer_evidence"]["sentence"]
    assert run_all.main(["--cache-dir", str(tiny_cache), "--results-dir", str(out),
                         "--methods", "lr", "--steps", "0"] + FAST_FLAGS) == 0
    assert "methods.json: not from the main sweep's run" in capsys.readouterr().err
    v = json.loads((out / "verdict.json").read_text())
    assert v["answer"] == "inconclusive" and "not tested" in v["answer_evidence"]["sentence"]
    doc = json.loads((out / "methods.json").read_text())
    (out / "methods_scores.npz").write_bytes(b"x" + (out / "methods_scores.npz").read_bytes())
    assert doc["files"]["scores_sha256"]
    assert run_all.main(["--results-dir", str(out), "--compare-only", "--quiet"]) == 2
    assert "sha256 does not match" in capsys.readouterr().err


# ---- end to end on the truth-known demo caches (demo_truth.py) ------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("truth,mechanism,expected", [("method", "scale", "both"),
                                                      ("method", "spurious", "both"),
                                                      ("data", None, "data")])
def test_truth_demos_get_their_answer_end_to_end(tmp_path, truth, mechanism, expected):
    """A small truth-known cache (calibration.py's size), run as a user runs run_all.py with
    the default method arms: the answer names the planted cause (on the method truths diverse
    data fix the benchmark too, so the answer is 'both')."""
    from sweeplib import demo
    from sweeplib.demo_truth import Variant
    cache, out = tmp_path / "cache", tmp_path / "results"
    demo.generate(cache, seed=0, scale=0.25, n_features=2048, verbose=False,
                  variant=Variant(truth, mechanism, True))
    assert run_all.main(["--cache-dir", str(cache), "--results-dir", str(out), "--seed", "0",
                         "--quiet"]) == 0
    v = json.loads((out / "verdict.json").read_text())
    assert v["answer"] == expected, v.get("answer_sentence")
    best = v["answer_evidence"]["method_effect"]["best"]
    if truth == "method":          # a method trained on step 0's data alone beats the reference
        assert best["claimed"] and best["delta"] > 0.1 and best["ci"][0] > 0.5
    else:                          # no method helps: nothing claimed
        assert not any(t["claimed"] for t in v["answer_evidence"]["method_effect"]["tests"])
