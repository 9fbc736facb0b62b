"""pytest tests/test_demo_data.py -- tiny synthetic caches in temporary folders."""

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import demo_data  # noqa: E402
from sweeplib import demo

SCALE = 0.1
N_FEATURES = 256
AF = "alignment_faking"


def _expected_count(n):
    return max(demo.MIN_CLASS_COUNT, round(n * SCALE))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One tiny cache (layer 40) shared by the read-only tests."""
    root = tmp_path_factory.mktemp("demo")
    summary = demo.generate(root, seed=0, scale=SCALE, n_features=N_FEATURES, verbose=False)
    return root, root / "layer_40", summary


def _load_all(layer_dir):
    """{dataset: (X, fine labels)} for every dataset in a layer folder."""
    out = {}
    for stem in ("train", "test"):
        y = np.load(layer_dir / f"{stem}_labels.npy")
        out[stem] = (np.load(layer_dir / f"{stem}_activations.npy"),
                     [AF if v == 1 else "aligned" for v in y])
    for stem in ("sycophant", "model_organism", "benchmark"):
        meta = json.loads((layer_dir / f"{stem}_labels.json").read_text())
        out[stem] = (np.load(layer_dir / f"{stem}_activations.npy"), meta["labels"])
    return out


def test_layout_shapes_dtypes_labels(cache):
    root, layer_dir, _ = cache
    data = _load_all(layer_dir)
    expected_n = {
        "train": _expected_count(2689 - 1057) + _expected_count(1057),
        "test": _expected_count(55) + _expected_count(51),
        "sycophant": _expected_count(319),
        "model_organism": _expected_count(730),
        "benchmark": sum(_expected_count(v) for v in demo.BENCHMARK_COUNTS.values()),
    }
    for stem, (X, labels) in data.items():
        assert X.dtype == np.float32 and X.ndim == 2, stem
        assert X.shape == (expected_n[stem], N_FEATURES), stem
        assert len(labels) == X.shape[0], stem
        assert np.isfinite(X).all() and (X >= 0).all(), stem
        assert np.count_nonzero(X, axis=1).min() > 0, stem

    for stem in ("train", "test"):
        y = np.load(layer_dir / f"{stem}_labels.npy")
        assert y.dtype == np.int64 and set(np.unique(y)) == {0, 1}
    assert int(np.load(layer_dir / "train_labels.npy").sum()) == _expected_count(1057)
    assert int(np.load(layer_dir / "test_labels.npy").sum()) == _expected_count(51)

    assert set(data["sycophant"][1]) == {AF} and set(data["model_organism"][1]) == {AF}
    bench_labels = data["benchmark"][1]
    for cls, n in demo.BENCHMARK_COUNTS.items():
        assert bench_labels.count(cls) == _expected_count(n), cls
    assert bench_labels != sorted(bench_labels)            # shuffled, not grouped by class

    for stem in ("sycophant", "model_organism", "benchmark"):
        meta = json.loads((layer_dir / f"{stem}_labels.json").read_text())
        assert meta["unique_labels"] == sorted(set(meta["labels"]))
        assert meta["layer"] == 40 and "synthetic" in meta["note"]

    marker = json.loads((root / "DEMO_CACHE.json").read_text())
    assert marker["synthetic"] is True and marker["generator"] == "demo_data.py"
    assert marker["n_features"] == N_FEATURES and marker["layers"] == [40]
    assert marker["seed"] == 0 and marker["scale"] == SCALE
    assert not [p for p in root.rglob("*") if ".tmp" in p.name]     # no temp files left behind


def test_summary_matches_files(cache):
    _, layer_dir, summary = cache
    stats = summary["layers"][40]
    X = np.load(layer_dir / "benchmark_activations.npy")
    d = stats["datasets"]["benchmark"]
    assert d["n"] == len(X)
    assert d["active_per_sample"] == pytest.approx(np.count_nonzero(X, axis=1).mean())
    assert d["mean_nonzero"] == pytest.approx(X[X > 0].mean(dtype=np.float64), rel=1e-4)
    assert stats["gold_vs_train_corr"] > 0.9


def test_active_counts_scale_with_width(cache):
    _, layer_dir, _ = cache
    train_active, ood_active = demo.LAYER_ACTIVE[40]
    X = np.load(layer_dir / "train_activations.npy")
    frac = np.count_nonzero(X, axis=1).mean() / N_FEATURES
    assert frac == pytest.approx(train_active / demo.REF_FEATURES, rel=0.3)
    B = np.load(layer_dir / "benchmark_activations.npy")
    frac = np.count_nonzero(B, axis=1).mean() / N_FEATURES
    assert frac == pytest.approx(ood_active / demo.REF_FEATURES, rel=0.4)


def test_regimes_differ(cache):
    _, layer_dir, _ = cache
    data = _load_all(layer_dir)
    active = {k: np.count_nonzero(X, axis=1).mean() for k, (X, _) in data.items()}
    magnitude = {k: X[X > 0].mean() for k, (X, _) in data.items()}
    for fmt in ("train", "test"):
        for ood in ("sycophant", "model_organism", "benchmark"):
            assert active[fmt] > 2.5 * active[ood], (fmt, ood)
            assert magnitude[fmt] > 5 * magnitude[ood], (fmt, ood)
    # gold_106 shares the training profile; the benchmark profile does not
    train_profile = data["train"][0].mean(axis=0)
    gold_corr = np.corrcoef(train_profile, data["test"][0].mean(axis=0))[0, 1]
    bench_corr = np.corrcoef(train_profile, data["benchmark"][0].mean(axis=0))[0, 1]
    assert gold_corr > 0.9 and abs(bench_corr) < 0.5


def test_sycophant_near_duplicates(cache):
    _, layer_dir, summary = cache
    X = np.load(layer_dir / "sycophant_activations.npy").astype(np.float64)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    cos = Xn @ Xn.T
    pairs = int(np.count_nonzero(np.triu(cos >= 0.99, k=1)))
    assert pairs > 0
    assert pairs == summary["layers"][40]["sycophant_near_duplicate_pairs"]
    assert pairs < len(X) * (len(X) - 1) // 4              # far from all rows identical


def test_deterministic(tmp_path):
    kw = dict(scale=SCALE, n_features=N_FEATURES, verbose=False)
    demo.generate(tmp_path / "a", seed=3, **kw)
    demo.generate(tmp_path / "b", seed=3, **kw)
    demo.generate(tmp_path / "c", seed=4, **kw)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 11               # 10 layer files + marker
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    for stem in ("train", "test", "sycophant", "model_organism", "benchmark"):
        a = np.load(tmp_path / "a" / "layer_40" / f"{stem}_activations.npy")
        c = np.load(tmp_path / "c" / "layer_40" / f"{stem}_activations.npy")
        assert a.shape == c.shape and not np.array_equal(a, c), stem


def test_cli_writes_each_layer(tmp_path):
    out = tmp_path / "cache"
    rc = demo_data.main(["--out", str(out), "--scale", str(SCALE), "--n-features", str(N_FEATURES),
                         "--layers", "40", "53", "--quiet", "--seed", "1"])
    assert rc == 0
    for layer in (40, 53):
        assert (out / f"layer_{layer}" / "benchmark_activations.npy").exists()
        meta = json.loads((out / f"layer_{layer}" / "benchmark_labels.json").read_text())
        assert meta["layer"] == layer
    a40 = np.load(out / "layer_40" / "train_activations.npy")
    a53 = np.load(out / "layer_53" / "train_activations.npy")
    assert a40.shape == a53.shape and not np.array_equal(a40, a53)
    marker = json.loads((out / "DEMO_CACHE.json").read_text())
    assert marker["layers"] == [40, 53] and marker["seed"] == 1


def test_scale_keeps_min_class_count(tmp_path):
    demo.generate(tmp_path, seed=0, scale=0.001, n_features=N_FEATURES, verbose=False)
    y = np.load(tmp_path / "layer_40" / "test_labels.npy")
    assert (y == 1).sum() == demo.MIN_CLASS_COUNT and (y == 0).sum() == demo.MIN_CLASS_COUNT
    labels = json.loads((tmp_path / "layer_40" / "benchmark_labels.json").read_text())["labels"]
    assert min(labels.count(c) for c in set(labels)) == demo.MIN_CLASS_COUNT


# --------------------------------------------------------------------------------------------
# Truth-known caches (demo_truth.py): deterministic, and the planted cause holds when checked
# with scikit-learn directly (no code of the tool's probes).
# --------------------------------------------------------------------------------------------
TRUTH_SCALE, TRUTH_FEATURES = 0.25, 2048
TRUTH_VARIANTS = {"method/scale": ("method", "scale"), "method/spurious": ("method", "spurious"),
                  "data": ("data", None)}


@pytest.fixture(scope="module")
def truth_caches(tmp_path_factory):
    """{truth: layer folder} at a tiny size, seed 0, with mean-pooled siblings."""
    from sweeplib.demo_truth import Variant
    out = {}
    for name, (truth, mechanism) in TRUTH_VARIANTS.items():
        root = tmp_path_factory.mktemp(name.replace("/", "_"))
        demo.generate(root, seed=0, scale=TRUTH_SCALE, n_features=TRUTH_FEATURES, verbose=False,
                      variant=Variant(truth, mechanism, mean_pooled=True))
        out[name] = root / "layer_40"
    return out


def _probe_aurocs(layer_dir):
    """Step-0 probes (train only) scored on the whole benchmark and gold_106, via scikit-learn."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler
    data = {k: (X.astype(np.float64), np.array([lab == AF for lab in labels]))
            for k, (X, labels) in _load_all(layer_dir).items()}
    X, y = data["train"]

    def rownorm(Z):
        return Z / np.linalg.norm(Z, axis=1, keepdims=True)

    scaler = StandardScaler().fit(X)
    with warnings.catch_warnings():         # a weakly regularized fit on separable rows
        warnings.simplefilter("ignore", ConvergenceWarning)
        lr = LogisticRegression(C=10, max_iter=300).fit(scaler.transform(X), y)
    mm = X[y].mean(0) - X[~y].mean(0)
    mm_rn = rownorm(X)[y].mean(0) - rownorm(X)[~y].mean(0)
    scores = {"lr": lambda Z: lr.decision_function(scaler.transform(Z)),
              "mass_mean": lambda Z: Z @ mm, "rownorm_mass_mean": lambda Z: rownorm(Z) @ mm_rn}
    return {name: {s: roc_auc_score(data[s][1], f(data[s][0])) for s in ("benchmark", "test")}
            for name, f in scores.items()}


@pytest.mark.parametrize("truth", ["method/scale", "method/spurious"])
def test_method_truth_dense_lr_fails_where_mass_mean_generalizes(truth_caches, truth):
    auc = _probe_aurocs(truth_caches[truth])
    assert auc["lr"]["benchmark"] < 0.65, auc
    for name in ("mass_mean", "rownorm_mass_mean"):
        assert auc[name]["benchmark"] > 0.75, (name, auc)
        assert auc[name]["benchmark"] > auc["lr"]["benchmark"] + 0.15, (name, auc)
    for name in auc:                                    # in-distribution every probe works
        assert auc[name]["test"] > 0.8, (name, auc)


def test_data_truth_nothing_trained_on_step_0_generalizes(truth_caches):
    auc = _probe_aurocs(truth_caches["data"])
    for name in auc:
        assert abs(auc[name]["benchmark"] - 0.5) < 0.08, (name, auc)
        assert auc[name]["test"] > 0.9, (name, auc)


def test_data_truth_ood_intent_is_on_features_no_training_row_carries(truth_caches):
    data = _load_all(truth_caches["data"])
    X_bench, labels = data["benchmark"]
    af = np.array([lab == AF for lab in labels])
    used_in_training = (data["train"][0] > 0).any(axis=0) | (data["test"][0] > 0).any(axis=0)
    gap = (X_bench[af] > 0).mean(0) - (X_bench[~af] > 0).mean(0)
    assert gap[~used_in_training].max() > 0.3              # the intent is there ...
    assert np.abs(gap[used_in_training]).max() < 0.2       # ... and not on training features


def test_truth_caches_are_deterministic_and_differ_by_seed(tmp_path):
    from sweeplib.demo_truth import Variant
    for truth, mechanism in TRUTH_VARIANTS.values():
        v = Variant(truth, mechanism, mean_pooled=True)
        kw = dict(scale=0.1, n_features=512, verbose=False, variant=v)
        tag = f"{truth}_{mechanism}"
        for name, seed in (("a", 5), ("b", 5), ("c", 6)):
            demo.generate(tmp_path / tag / name, seed=seed, **kw)
        a, b, c = (tmp_path / tag / n for n in "abc")
        files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        assert len(files) == 16, files              # 10 layer files + 5 mean-pooled + marker
        for rel in files:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), (tag, rel)
        assert not np.array_equal(np.load(a / "layer_40" / "benchmark_activations.npy"),
                                  np.load(c / "layer_40" / "benchmark_activations.npy")), tag
        marker = json.loads((a / "DEMO_CACHE.json").read_text())
        assert (marker["truth"], marker["mechanism"], marker["mean_pooled"]) == (
            truth, mechanism, True)


def test_mean_pooled_siblings(truth_caches, tmp_path):
    layer_dir = truth_caches["method/scale"]
    for stem in ("train", "test", "sycophant", "model_organism", "benchmark"):
        X = np.load(layer_dir / f"{stem}_activations.npy")
        M = np.load(layer_dir / f"{stem}_mean_activations.npy")
        assert M.dtype == np.float32 and M.shape == X.shape, stem
        assert ((M > 0) == (X > 0)).all() and (M <= X).all(), stem
        assert 0.05 < M.sum() / X.sum() < 0.5, stem            # diluted, not a copy
    # the max-pooled files do not depend on the flag
    from sweeplib.demo_truth import Variant
    demo.generate(tmp_path, seed=0, scale=TRUTH_SCALE, n_features=TRUTH_FEATURES, verbose=False,
                  variant=Variant("method", "scale"))
    assert (tmp_path / "layer_40" / "train_activations.npy").read_bytes() == (
        layer_dir / "train_activations.npy").read_bytes()
    assert not list((tmp_path / "layer_40").glob("*_mean_activations.npy"))


def test_default_demo_with_mean_pooled_keeps_its_files(tmp_path):
    from sweeplib.demo_truth import Variant
    kw = dict(seed=2, scale=SCALE, n_features=N_FEATURES, verbose=False)
    demo.generate(tmp_path / "plain", **kw)
    demo.generate(tmp_path / "mean", variant=Variant(mean_pooled=True), **kw)
    for p in (tmp_path / "plain" / "layer_40").iterdir():
        assert p.read_bytes() == (tmp_path / "mean" / "layer_40" / p.name).read_bytes(), p.name
    assert (tmp_path / "mean" / "layer_40" / "benchmark_mean_activations.npy").exists()


@pytest.mark.parametrize("argv, message", [
    (["--truth", "data", "--null", "clean"], "--truth: cannot be combined with --null"),
    (["--truth", "data", "--mechanism", "scale"], "--mechanism: only with --truth method"),
    (["--mechanism", "spurious"], "--mechanism: only with --truth method"),
])
def test_cli_refuses_truth_combinations(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        demo_data.main(["--out", str(tmp_path / "c"), "--quiet"] + argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_cli_truth_method_defaults_to_scale(tmp_path):
    rc = demo_data.main(["--out", str(tmp_path), "--truth", "method", "--scale", "0.1",
                         "--n-features", "512", "--quiet"])
    assert rc == 0
    marker = json.loads((tmp_path / "DEMO_CACHE.json").read_text())
    assert (marker["truth"], marker["mechanism"], marker["mean_pooled"]) == ("method", "scale", False)


# ---- the fresh in-distribution sample (demo_fresh.py) and --conflict ---------------------------
def test_fresh_sample_is_written_beside_the_cache_never_inside(tmp_path):
    from sweeplib import demo_fresh
    out = tmp_path / "cache"
    assert demo_data.main(["--out", str(out), "--scale", str(SCALE), "--n-features",
                           str(N_FEATURES), "--quiet", "--fresh", "3000"]) == 0
    inside = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert not any("fresh" in name for name in inside)
    assert demo_fresh.fresh_dir(out) == tmp_path / "cache_fresh"
    X, y = demo_fresh.load(out)
    assert X.shape == (3000, N_FEATURES) and X.dtype == np.float32 and (np.asarray(X) >= 0).all()
    assert abs(y.mean() - 51 / 106) < 0.04           # gold_106's class ratio
    # gold_106's distribution: the same profile as the cache's gold_106 rows
    gold = np.load(out / "layer_40" / "test_activations.npy")
    assert np.corrcoef(np.asarray(X).mean(0), gold.mean(0))[0, 1] > 0.95
    first = (tmp_path / "cache_fresh" / "layer_40" / "fresh_activations.npy").read_bytes()
    demo_fresh.generate(out, 3000, seed=0, n_features=N_FEATURES, layers=[40])
    assert (tmp_path / "cache_fresh" / "layer_40" / "fresh_activations.npy").read_bytes() == first


def test_conflict_changes_only_the_benchmark(tmp_path):
    kw = dict(seed=1, scale=SCALE, n_features=N_FEATURES, verbose=False)
    demo.generate(tmp_path / "a", **kw)
    demo.generate(tmp_path / "b", conflict=2.0, **kw)
    for stem in ("train", "test", "sycophant", "model_organism"):
        assert ((tmp_path / "a" / "layer_40" / f"{stem}_activations.npy").read_bytes()
                == (tmp_path / "b" / "layer_40" / f"{stem}_activations.npy").read_bytes()), stem
    a = np.load(tmp_path / "a" / "layer_40" / "benchmark_activations.npy")
    b = np.load(tmp_path / "b" / "layer_40" / "benchmark_activations.npy")
    labels = json.loads((tmp_path / "b" / "layer_40" / "benchmark_labels.json").read_text())
    hard = np.isin(labels["labels"], ["hard_negative", "compliant_hard_negative"])
    # features the benchmark never uses without --conflict (the training-format intent
    # block): active in the hard negatives, rarely in the other rows, at training magnitude
    new = (a == 0).all(axis=0) & (b > 0).any(axis=0)
    on = (b[:, new] > 0).sum(axis=1)
    assert new.sum() >= 10 and on[hard].mean() > 3 * max(1.0, on[~hard].mean())
    assert np.median(b[:, new][b[:, new] > 0]) > 50          # OOD format is ~31
    marker = json.loads((tmp_path / "b" / "DEMO_CACHE.json").read_text())
    assert marker["conflict"] == 2.0
    assert "conflict" not in json.loads((tmp_path / "a" / "DEMO_CACHE.json").read_text())


def test_bad_fresh_or_conflict_flags_exit_2(tmp_path, capsys):
    for flags in (["--fresh", "1"], ["--conflict", "-1"], ["--fresh", "100", "--sparse"]):
        with pytest.raises(SystemExit) as e:
            demo_data.main(["--out", str(tmp_path / "c"), "--quiet"] + flags)
        assert e.value.code == 2
    assert not (tmp_path / "c").exists()
def test_sparse_demo_is_the_dense_demo_as_npz(cache, tmp_path):
    """--sparse writes <stem>_activations.npz only, holding exactly the dense demo's values;
    the marker says so."""
    root, layer_dir, _ = cache
    import scipy.sparse as sp
    out = tmp_path / "sparse"
    assert demo_data.main(["--out", str(out), "--scale", str(SCALE), "--n-features",
                           str(N_FEATURES), "--quiet", "--sparse"]) == 0
    assert not list((out / "layer_40").glob("*.npy")) or all(
        p.name.endswith("_labels.npy") for p in (out / "layer_40").glob("*.npy"))
    for dense in layer_dir.glob("*_activations.npy"):
        X = sp.load_npz(out / "layer_40" / dense.name.replace(".npy", ".npz"))
        assert X.format == "csr" and X.dtype == np.float32
        assert np.array_equal(X.toarray(), np.load(dense))
    assert json.loads((out / "DEMO_CACHE.json").read_text())["sparse"] is True


def test_wide_demo_keeps_the_real_density(tmp_path):
    """Above 16,384 features the rows keep the reference's active counts (--density real;
    --density proportional multiplies them), the values spread over the whole width, and the
    same arguments give the same files."""
    import scipy.sparse as sp
    args = ["--scale", "0.05", "--quiet", "--sparse"]
    ref = demo.generate(tmp_path / "ref", scale=0.05, n_features=16384, sparse=True,
                        verbose=False)
    wide = demo.generate(tmp_path / "wide", scale=0.05, n_features=65536, sparse=True,
                         verbose=False)
    for name, d in ref["layers"][40]["datasets"].items():
        w = wide["layers"][40]["datasets"][name]
        assert w["active_per_sample"] == pytest.approx(d["active_per_sample"], rel=0.02), name
        assert w["mean_nonzero"] == pytest.approx(d["mean_nonzero"], rel=0.02), name
    X = sp.load_npz(tmp_path / "wide" / "layer_40" / "train_activations.npz")
    assert X.shape[1] == 65536 and len(np.unique(X.indices)) > 20000     # beyond 16,384
    assert wide["layers"][40]["gold_vs_train_corr"] > 0.8                # one profile
    assert json.loads((tmp_path / "wide" / "DEMO_CACHE.json").read_text())["density"] == "real"
    assert demo_data.main(["--out", str(tmp_path / "again"), "--n-features", "65536"]
                          + args) == 0
    for p in (tmp_path / "wide" / "layer_40").iterdir():
        assert p.read_bytes() == (tmp_path / "again" / "layer_40" / p.name).read_bytes(), p.name
    prop = demo.generate(tmp_path / "prop", scale=0.05, n_features=32768, sparse=True,
                         density="proportional", verbose=False)
    assert prop["layers"][40]["datasets"]["train"]["active_per_sample"] > \
        1.8 * ref["layers"][40]["datasets"]["train"]["active_per_sample"]


def test_sparse_size_limit_follows_the_values_not_the_width(tmp_path):
    """A 262,144-feature cache at 4x the rows is refused dense (over 8 GiB) but not sparse."""
    with pytest.raises(demo.InputError, match="--scale/--n-features"):
        demo.check_request(tmp_path / "a", scale=4.0, n_features=262144)
    demo.check_request(tmp_path / "a", scale=4.0, n_features=262144, sparse=True)
