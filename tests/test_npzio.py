"""The sparse input form (npzio.py, through data.py and a whole run): `<stem>_activations.npz`
written by scipy.sparse.save_npz gives the same results as the dense `.npy` of the same data,
every bad-input rule holds for it, and a wide cache runs in memory that follows its non-zeros."""
import hashlib
import json
import shutil
import tracemalloc

import joblib
import numpy as np
import pytest
import scipy.sparse as sp

import run_all
from conftest import FAST_FLAGS
from sweeplib import data, datacheck, demo_wide
from sweeplib.base import InputError

LAYER = "layer_40"
FORMATS = {"train": "csr", "test": "csc"}          # the others: COO


def to_sparse(cache, fmt=FORMATS, width=None):
    """Replace every dense activations file of a cache by its .npz (CSR, CSC or COO; widened
    to `width` features by demo_wide.widen when given)."""
    for path in sorted((cache / LAYER).glob("*_activations.npy")):
        stem = path.name[:-len("_activations.npy")]
        X = sp.csr_matrix(np.load(path))
        if width:
            X = demo_wide.widen(X, width, lambda key: np.random.default_rng(key),
                                np.random.default_rng(7))
        sp.save_npz(path.with_suffix(".npz"), X.asformat(fmt.get(stem, "coo")))
        path.unlink()
        path.with_name(f"{stem}_activations.csr.npz").unlink(missing_ok=True)   # its sidecar
    return cache


def save_raw(path, **arrays):
    """An .npz with exactly these members (np.savez; object arrays pickled)."""
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def csr_members(X, **override):
    """The members save_npz writes for a CSR matrix, some replaced."""
    X = sp.csr_matrix(X)
    out = {"format": np.array(b"csr"), "shape": np.array(X.shape), "data": X.data,
           "indices": X.indices, "indptr": X.indptr}
    out.update(override)
    return out


def normalized(obj, roots):
    """A record with the run's own identity (run id, folders, file names and fingerprints of
    the activation files, times, versions) taken out: what must agree between the forms."""
    if isinstance(obj, dict):
        return {normalized(k, roots): normalized(v, roots) for k, v in obj.items()
                if k not in ("run_id", "run_ids", "timestamp", "inputs")
                and not k.endswith("sha256")}
    if isinstance(obj, list):
        return [normalized(v, roots) for v in obj]
    if isinstance(obj, str):
        for root, name in roots.items():
            obj = obj.replace(str(root), name)
        return obj.replace("_activations.npz", "_activations.npy")
    return obj


def test_sparse_and_dense_forms_give_identical_results(tiny_cache, tiny_run, tmp_path):
    """One run on the .npz form (CSR, CSC and COO files) of the tiny cache: every field of
    every step JSON, every score and weight array, the verdict and the report agree with the
    dense run's (only run ids, folders and input fingerprints differ)."""
    cache = to_sparse(shutil.copytree(tiny_cache, tmp_path / "cache"))
    out = tmp_path / "results"
    assert run_all.main(["--cache-dir", str(cache), "--results-dir", str(out)] + FAST_FLAGS) == 0
    roots = {tiny_cache: "CACHE", cache: "CACHE", tiny_run: "OUT", out: "OUT"}
    steps = sorted(p.name for p in tiny_run.glob("step_*.json"))
    assert steps and steps == sorted(p.name for p in out.glob("step_*.json"))
    for name in steps + ["verdict.json"]:
        dense, sparse = (json.loads((d / name).read_text()) for d in (tiny_run, out))
        assert normalized(sparse, roots) == normalized(dense, roots), name
        if name != "verdict.json":                # the run read the sparse files
            assert sum(p.endswith("_activations.npz") for p in sparse["inputs"]) == 5
    for path in tiny_run.glob("step_*_scores.npz"):
        with np.load(path) as a, np.load(out / path.name) as b:
            assert a.files == b.files
            for key in a.files:
                if key != "run_id":
                    assert np.array_equal(a[key], b[key]), (path.name, key)
    for path in tiny_run.glob("step_*_probe.pkl"):            # the fitted pipelines
        a, b = (joblib.load(p)["pipeline"] for p in (path, out / path.name))
        for attr in ("mean_", "var_", "scale_"):
            assert np.array_equal(getattr(a[0], attr), getattr(b[0], attr))
        assert np.array_equal(a[-1].coef_, b[-1].coef_)
        assert np.array_equal(a[-1].intercept_, b[-1].intercept_)
    body = lambda d: (d / "report.txt").read_text().split("\nTraining progression")[1]  # noqa: E731
    assert normalized(body(out), roots) == normalized(body(tiny_run), roots)


@pytest.mark.slow
def test_sparse_and_dense_forms_give_identical_controls(tiny_cache, tmp_path):
    """The controls too (format baseline, orderings, transfer matrix, fixed budget): every
    JSON file of a run on the .npz form equals the dense run's."""
    flags = ["--baseline", "format", "--orderings", "all", "--transfer", "--budget", "base"]
    cache = to_sparse(shutil.copytree(tiny_cache, tmp_path / "cache"))
    outs = {}
    for form, root in (("dense", tiny_cache), ("sparse", cache)):
        outs[form] = tmp_path / form
        assert run_all.main(["--cache-dir", str(root), "--results-dir", str(outs[form])]
                            + flags + FAST_FLAGS) == 0
    roots = {tiny_cache: "CACHE", cache: "CACHE", outs["dense"]: "OUT", outs["sparse"]: "OUT"}
    def results(folder):
        """The result JSON files under a folder (not the ownership marks)."""
        return sorted(p.relative_to(folder) for p in folder.rglob("*.json")
                      if ".sweep-owned" not in p.parts)
    files = results(outs["dense"])
    assert len(files) > 20 and files == results(outs["sparse"])
    for rel in files:
        dense, sparse = (json.loads((outs[f] / rel).read_text()) for f in ("dense", "sparse"))
        assert normalized(sparse, roots) == normalized(dense, roots), rel


def test_sparse_file_is_read_once_hashed_and_canonical(tmp_path):
    """Duplicates summed, explicit zeros dropped, unsorted indices sorted, float64 and int
    values as float32: the dense path's matrix, bit for bit; the fingerprint is the sha256 of
    the file's bytes."""
    rng = np.random.default_rng(0)
    dense = np.where(rng.random((30, 50)) < 0.2, rng.random((30, 50)) * 100, 0.0)
    dense[4] = 0.0
    npy = tmp_path / "a_activations.npy"
    np.save(npy, dense.astype(np.float32))
    want, _ = data.load_activations(npy)
    coo = sp.coo_matrix(dense)                     # every value as two halves, one zero
    vals = np.r_[coo.data / 2, coo.data / 2, 0.0]
    where = np.r_[coo.row, coo.row, 7], np.r_[coo.col, coo.col, 3]
    path = tmp_path / "b_activations.npz"
    sp.save_npz(path, sp.coo_matrix((vals, where), shape=dense.shape))
    X, n_neg, fp = data.read_activations(path)
    assert X.dtype == want.dtype and X.indices.dtype == want.indices.dtype
    assert X.indptr.dtype == want.indptr.dtype and n_neg == 0
    assert np.array_equal(X.indptr, want.indptr) and np.array_equal(X.indices, want.indices)
    assert np.array_equal(X.data, want.data)                # halves summed, then float32
    assert fp["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert fp == data.fingerprint(path)
    unsorted = sp.csr_matrix(dense.astype(np.float32))
    unsorted.indices = unsorted.indices.copy()
    for r in range(unsorted.shape[0]):                      # reverse each row's order
        lo, hi = unsorted.indptr[r], unsorted.indptr[r + 1]
        unsorted.indices[lo:hi] = unsorted.indices[lo:hi][::-1]
        unsorted.data[lo:hi] = unsorted.data[lo:hi][::-1]
    save_raw(tmp_path / "c_activations.npz", **csr_members(unsorted, indices=unsorted.indices,
                                                           data=unsorted.data))
    X, _ = data.load_activations(tmp_path / "c_activations.npz")
    assert (X != want).nnz == 0 and np.array_equal(X.indices, want.indices)


BAD = {
    "NaN": (lambda X: csr_members(X, data=np.r_[np.nan, X.data[1:]]),
            "non-finite value nan at row 0, feature"),
    "beyond float32": (lambda X: csr_members(X, data=np.r_[1e39, X.data[1:].astype(np.float64)]),
                       "outside the float32 range at row 0"),
    "object array": (lambda X: csr_members(X, data=np.array([object()] * X.nnz)),
                     "holds an object array; refusing to unpickle it"),
    "1-D shape": (lambda X: csr_members(X, shape=np.array([X.shape[0]])), "'shape'"),
    "indptr too short": (lambda X: csr_members(X, indptr=X.indptr[:-1]), "indptr has"),
    "index out of range": (lambda X: csr_members(X, indices=X.indices + X.shape[1]),
                           "out of range"),
    "no format": (lambda X: {k: v for k, v in csr_members(X).items() if k != "format"},
                  "not a scipy.sparse.save_npz file"),
    "bsr": (lambda X: csr_members(X, format=np.array(b"bsr")), "not supported"),
    "all zero": (lambda X: csr_members(X * 0), "no active feature in any of its"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_sparse_input_is_one_line_naming_the_file(cache_copy, case):
    make, message = BAD[case]
    path = cache_copy / LAYER / "train_activations.npy"
    X = sp.csr_matrix(np.load(path))
    path.unlink()
    bad = path.with_suffix(".npz")
    save_raw(bad, **make(X))
    with pytest.raises(InputError) as e:
        datasets, ids, _ = data.load_cache(cache_copy, 40, ["train", "gold_106"])
        datacheck.check_datasets(datasets, ids, warn=lambda m: None)
    assert str(e.value).startswith(f"{bad}:") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_sparse_shape_and_label_rules(cache_copy, capsys):
    """Features differing from another dataset's, rows differing from the labels, a truncated
    archive, and both forms present: each refused naming the file, exit 2 from a script."""
    layer = cache_copy / LAYER
    to_sparse(cache_copy)
    train = sp.load_npz(layer / "train_activations.npz")
    sp.save_npz(layer / "train_activations.npz", train[:-1])
    with pytest.raises(InputError, match=r"train_labels\.npy: \d+ labels for \d+ rows"):
        data.load_cache(cache_copy, 40, ["train"])
    sp.save_npz(layer / "train_activations.npz", train[:, :-1])
    with pytest.raises(InputError, match=r"train_activations\.npz: \d+ features, but"):
        data.load_cache(cache_copy, 40, ["gold_106", "train"])
    (layer / "train_activations.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(InputError, match="train_activations.npz: not a readable sparse .npz"):
        data.load_cache(cache_copy, 40, ["train"])
    sp.save_npz(layer / "train_activations.npz", train)
    np.save(layer / "train_activations.npy", train.toarray())
    rc = run_all.main(["--cache-dir", str(cache_copy), "--results-dir",
                       str(cache_copy.parent / "out")] + FAST_FLAGS)
    first = capsys.readouterr().err.strip().splitlines()[0]
    assert rc == 2 and "train_activations.npy: two activations files" in first
    assert "train_activations.npz" in first and not (cache_copy.parent / "out").exists()


def test_identical_rows_are_refused_without_densifying():
    """check_mix's rule on rows with equal counts of non-zeros, compared sparse."""
    same = sp.csr_matrix(np.array([[0, 2.0, 0, 1], [0, 2.0, 0, 1], [0, 2.0, 0, 1]]))
    moved = sp.csr_matrix(np.array([[0, 2.0, 0, 1], [2.0, 0, 0, 1], [0, 2.0, 0, 1]]))
    other = sp.csr_matrix(np.array([[0, 2.0, 0, 1], [0, 2.0, 0, 3], [0, 2.0, 0, 1]]))
    assert datacheck._rows_identical(same)
    assert not datacheck._rows_identical(moved) and not datacheck._rows_identical(other)
    assert datacheck._rows_identical(sp.csr_matrix((4, 10)))


def traced_peak(cache, out, argv):
    """Peak traced memory (bytes) of one run_all.main on a cache."""
    tracemalloc.start()
    try:
        rc = run_all.main(["--cache-dir", str(cache), "--results-dir", str(out)] + argv)
        return rc, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_wide_sparse_cache_runs_in_memory_that_follows_the_non_zeros(tiny_cache, tmp_path):
    """The tiny cache spread over 262,144 features (each value on one of 1,024 finer ones,
    the same non-zeros): one step (3 fits and the audit, in this process) needs less extra traced
    memory than half a float32 rows x width array. What the width costs is per fit (L-BFGS
    keeps about 25 width-sized float64 vectors per fit), never per row."""
    width = 262144
    narrow = to_sparse(shutil.copytree(tiny_cache, tmp_path / "narrow"))
    wide = to_sparse(shutil.copytree(tiny_cache, tmp_path / "wide"), width=width)
    rows = sum(sp.load_npz(p).shape[0] for p in (wide / LAYER).glob("*_activations.npz"))
    argv = ["--steps", "0", "--cv-folds", "2"] + FAST_FLAGS
    rc0, base = traced_peak(narrow, tmp_path / "out0", argv)
    rc1, peak = traced_peak(wide, tmp_path / "out1", argv)
    assert rc0 == rc1 == 0
    assert json.loads((tmp_path / "out1" / "step_0_base.json").read_text())["n_features"] == width
    assert peak - base < rows * width * 2, \
        f"{(peak - base) / 1e6:.0f} MB more traced for {rows} rows x {width} features"
