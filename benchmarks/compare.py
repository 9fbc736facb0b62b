"""Side-by-side parts of bench_sweep.py: a reference revision exported from git, the
agreement of two results folders, the original research scripts' emulation, and the tables
that put two sets of runs next to each other."""
from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

BACKGROUND = "background"        # phases marked so in their name overlap other phases
COMPARED = ("evaluation", "cv_auroc_folds", "cv_auroc_mean", "n_iter", "cv_n_iter",
            "converged", "cv_converged", "thresholds", "train_accuracy", "n_nonzero_weights",
            "top_features", "training_breakdown", "leakage_audit")


def export_revision(repo, rev, dest):
    """The tree of git revision `rev` written to dest (git archive: no worktree, no branch
    touched); returns (dest, full commit id)."""
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                            capture_output=True, text=True)
    if commit.returncode != 0:
        print(f"error: --compare-ref: {rev!r} is not a commit of {repo} "
              f"({commit.stderr.strip()})", file=sys.stderr)
        raise SystemExit(2)
    data = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit.stdout.strip()],
                          capture_output=True, check=True).stdout
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest, commit.stdout.strip()


def results_agreement(a, b):
    """Compare every step JSON of two results folders on the numbers (COMPARED keys):
    {"steps": n, "identical": bool, "differences": [(file, key)], "max_abs_diff": float}."""
    diffs, worst, n = [], 0.0, 0
    for pa in sorted(Path(a).glob("step_*_*.json")):
        pb = Path(b) / pa.name
        ra, rb = json.loads(pa.read_text()), json.loads(pb.read_text())
        n += 1
        for key in COMPARED:
            if ra.get(key) != rb.get(key):
                diffs.append((pa.name, key))
                worst = max(worst, _max_diff(ra.get(key), rb.get(key)))
    return {"steps": n, "identical": not diffs, "differences": diffs, "max_abs_diff": worst}


def _max_diff(x, y):
    """Largest |difference| between two JSON values of the same shape (inf if they differ in
    shape or non-numeric content)."""
    if isinstance(x, dict) and isinstance(y, dict):
        if set(x) != set(y):
            return float("inf")
        return max((_max_diff(x[k], y[k]) for k in x), default=0.0)
    if isinstance(x, list) and isinstance(y, list):
        if len(x) != len(y):
            return float("inf")
        return max((_max_diff(u, v) for u, v in zip(x, y)), default=0.0)
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        return abs(float(x) - float(y))
    return 0.0 if x == y else float("inf")


def original_agreement(metrics, results_dir):
    """The tool's saved metrics vs the emulated original scripts' dense fits, per step and
    eval set: AUROC on two-class sets; detection rate and AUROC vs the benchmark's negatives
    on all-AF sets. Returns rows for bench_sweep.print_agreement."""
    from sklearn.metrics import roc_auc_score
    rows, fits = [], []
    for m in metrics:
        path = next(Path(results_dir).glob(f"step_{m['step']}_*.json"))
        record = json.loads(path.read_text())
        fits.append({"step": m["step"], "n_train": m["n_train"], "fit_s": m["fit_s"],
                     "n_iter": m["n_iter"], "converged": m["converged"]})
        sets = {n: (np.asarray(v["score"]), np.asarray(v["label"])) for n, v in m["sets"].items()}
        for name, (s, y) in sets.items():
            tool = record["evaluation"][name]
            if len(np.unique(y)) == 2:
                rows.append(_row(m["step"], name, "AUROC", tool["auroc"], roc_auc_score(y, s)))
                continue
            rows.append(_row(m["step"], name, "detection rate", tool["detection_rate"],
                             float(np.mean(s >= 0))))
            if "benchmark" in sets and tool.get("auroc_vs_reference_negatives") is not None:
                rs, ry = sets["benchmark"]
                neg = rs[ry == 0]
                yy = np.r_[np.ones(len(s)), np.zeros(len(neg))]
                rows.append(_row(m["step"], name, "AUROC vs benchmark neg.",
                                 tool["auroc_vs_reference_negatives"],
                                 roc_auc_score(yy, np.r_[s, neg])))
    return {"rows": rows, "reference_fits": fits}


def _row(step, name, metric, tool, ref):
    """One agreement row."""
    return {"step": step, "eval_set": name, "metric": metric, "tool": float(tool),
            "reference": float(ref), "abs_diff": abs(float(tool) - float(ref))}


def spread(values):
    """{median, min, max} of a list of numbers."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def side_by_side(runs, ref_runs, fmt_gb, table):
    """Text table: wall time, memory and every phase, ours next to the reference."""
    def cell(vals, f):
        s = spread(vals)
        return f"{f(s['median'])} [{f(s['min'])}-{f(s['max'])}]"
    sec = lambda v: f"{v:.2f}"                                      # noqa: E731
    rows = []
    for label, key, f in (("wall time (s)", "wall_s", sec),
                          ("CPU time, process tree (s)", "cpu_s", sec),
                          ("peak RSS, main process (GB)", "peak_rss_bytes", fmt_gb),
                          ("peak PSS sum, process tree (GB)", "tree_pss_peak_bytes", fmt_gb)):
        ours, ref = [r[key] for r in runs], [r[key] for r in ref_runs]
        ratio = statistics.median(ref) / statistics.median(ours)
        rows.append([label, cell(ours, f), cell(ref, f), f"{ratio:.2f}x"])
    phases = list(dict.fromkeys(p for r in ref_runs + runs for p in r["timings"]))
    for p in phases:
        ours = [r["timings"].get(p, 0.0) for r in runs]
        ref = [r["timings"].get(p, 0.0) for r in ref_runs]
        rows.append([f"  {p}", cell(ours, sec), cell(ref, sec), ""])
    rows.append(["  other (start-up, imports, untimed)", cell([other(r) for r in runs], sec),
                 cell([other(r) for r in ref_runs], sec), ""])
    return table(["", "ours: median [min-max]", "reference: median [min-max]",
                  "reference / ours"], rows)


def other(run):
    """Wall time no phase covers (phases that ran in the background do not count)."""
    return run["wall_s"] - sum(v for k, v in run["timings"].items() if BACKGROUND not in k)
