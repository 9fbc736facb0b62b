"""Check the truth-known demo caches with scikit-learn alone, independently of the tool.

    python benchmarks/truth_check.py                       # 4 seeds, full size, 2,048 features
    python benchmarks/truth_check.py --seeds 2 --scale 0.25

For each truth (method/scale, method/spurious, data) and cache seed, train a few probes on step
0's data (train) and on step 3's mix (train + 80 % of sycophant, model_organism and benchmark,
a seeded stratified split of this script's own), and score the benchmark's held-out 20 % and
gold_106. Expected: on the method truths the dense LR fails at step 0 and a mass-mean or
row-normalized probe does not; on the data truth every probe is near 0.5 at step 0; at step 3
the dense LR reaches the benchmark everywhere. Prints AUROC mean [min, max] over seeds.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TRUTHS = {"method/scale": ("method", "scale"), "method/spurious": ("method", "spurious"),
          "data": ("data", None)}
OOD = ("sycophant", "model_organism", "benchmark")
TOP_K = 16


def load(layer_dir):
    """{stem: (X float64, y 0/1)} for the five datasets of a layer folder."""
    out = {}
    for stem in ("train", "test"):
        out[stem] = (np.load(layer_dir / f"{stem}_activations.npy").astype(np.float64),
                     np.load(layer_dir / f"{stem}_labels.npy"))
    for stem in OOD:
        labels = json.loads((layer_dir / f"{stem}_labels.json").read_text())["labels"]
        out[stem] = (np.load(layer_dir / f"{stem}_activations.npy").astype(np.float64),
                     np.array([lab == "alignment_faking" for lab in labels], dtype=int))
    return out


def row_normalized(X):
    """Each row divided by its Euclidean norm."""
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def dense_lr(X, y):
    """StandardScaler + LogisticRegression(C=10): the tool's reference probe."""
    scaler = StandardScaler().fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lr = LogisticRegression(C=10, max_iter=2000).fit(scaler.transform(X), y)
    return lambda Z: lr.decision_function(scaler.transform(Z))


def mass_mean(X, y):
    """Difference of the class means, raw activations."""
    w = X[y == 1].mean(0) - X[y == 0].mean(0)
    return lambda Z: Z @ w


def mass_mean_top(X, y, k=TOP_K):
    """Difference of means on the k features with the largest |mean difference| / sd."""
    w = X[y == 1].mean(0) - X[y == 0].mean(0)
    top = np.argsort(-np.abs(w) / (X.std(0) + 1e-9), kind="stable")[:k]
    return lambda Z: Z[:, top] @ w[top]


PROBES = {
    "dense LR (C=10)": dense_lr,
    "mass-mean": mass_mean,
    f"mass-mean top-{TOP_K}": mass_mean_top,
    "row-norm mass-mean": lambda X, y: _on_rows(mass_mean(row_normalized(X), y)),
    "row-norm LR (C=10)": lambda X, y: _on_rows(dense_lr(row_normalized(X), y)),
}


def _on_rows(score):
    """A scoring function applied to row-normalized input."""
    return lambda Z: score(row_normalized(Z))


def mixes(data, split_seed):
    """(step 0 training (X, y), step 3 training (X, y), benchmark held-out (X, y))."""
    parts, held = [data["train"]], None
    for stem in OOD:
        X, y = data[stem]
        idx_tr, idx_te = train_test_split(np.arange(len(y)), test_size=0.2, random_state=split_seed,
                                          stratify=y if len(set(y)) > 1 else None)
        parts.append((X[idx_tr], y[idx_tr]))
        if stem == "benchmark":
            held = (X[idx_te], y[idx_te])
    step3 = (np.vstack([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return data["train"], step3, held


def check_one(truth, seed, scale, n_features, work):
    """{(probe, step, set): AUROC} for one cache."""
    from sweeplib import demo
    from sweeplib.demo_truth import Variant
    out = Path(work) / f"{truth.replace('/', '_')}_{seed}"
    demo.generate(out, seed=seed, scale=scale, n_features=n_features, verbose=False,
                  variant=Variant(*TRUTHS[truth]))
    data = load(out / "layer_40")
    step0, step3, held = mixes(data, seed)
    res = {}
    for name, fit in PROBES.items():
        for step, (X, y) in (("0", step0), ("3", step3)):
            score = fit(X, y)
            res[(name, step, "benchmark")] = roc_auc_score(held[1], score(held[0]))
            res[(name, step, "gold_106")] = roc_auc_score(data["test"][1], score(data["test"][0]))
    return res


def table(results):
    """Aligned rows: truth, probe, then mean [min, max] per (step, set)."""
    cols = [("0", "benchmark"), ("0", "gold_106"), ("3", "benchmark")]
    head = "".join(f"{'step ' + s + ' ' + n:>22}" for s, n in cols)
    print(f"{'truth':<16}{'probe':<22}{head}")
    for truth, runs in results.items():
        for name in PROBES:
            cells = []
            for key in cols:
                v = np.array([r[(name, *key)] for r in runs])
                cells.append(f"{v.mean():.2f} [{v.min():.2f}, {v.max():.2f}]")
            print(f"{truth:<16}{name:<22}" + "".join(f"{c:>22}" for c in cells))


def main(argv=None):
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=4, help="cache seeds 0..N-1 per truth")
    p.add_argument("--scale", type=float, default=1.0, help="demo sample-count scale")
    p.add_argument("--n-features", type=int, default=2048, help="demo SAE width")
    p.add_argument("--truths", nargs="+", choices=list(TRUTHS), default=list(TRUTHS))
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="truth-check-") as work:
        results = {t: [check_one(t, s, a.scale, a.n_features, work) for s in range(a.seeds)]
                   for t in a.truths}
    print(f"{a.seeds} seeds per truth, demo scale {a.scale}, {a.n_features} features; benchmark: "
          "held-out 20 %; AUROC mean [min, max]")
    table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
