"""python benchmarks/bench_sweep.py [--repeats 3] [--quick] [--json bench.json]

Benchmark of the default distribution sweep (4 steps, 5-fold CV, 4 eval sets, bootstrap CIs)
on the full-size synthetic demo cache:

1. End to end: `run_all.py --cache-dir <cache> --results-dir <tmp> --quiet` is run --repeats
   times, each in a fresh subprocess; wall time is process start to exit (demo generation
   excluded). Each child dumps `common.TIMINGS` (per-phase wall seconds) to a JSON file.
2. Peak memory of every child, two ways:
   - main process: VmHWM (the kernel's RSS high-water mark of the process's own address
     space), read by the child from /proc/self/status when the sweep returns. Not ru_maxrss:
     Linux seeds a child's ru_maxrss with the parent's high-water mark at fork/exec, so
     wait4()/RUSAGE_CHILDREN would report this benchmark's own peak for a small child;
   - process tree: PSS (proportional set size: shared pages split between the processes
     sharing them) of the child plus all its descendants (joblib workers), summed, sampled
     from /proc every 0.5 s; the summed RSS (an upper bound) is sampled every 50 ms.
3. Scaling: one run per cell of {0.5x, 1x, 2x samples} x {4,096, 16,384, 49,152 features}
   (caches generated under --work-dir and deleted afterwards unless --keep), with the wall
   time and peak memory per non-zero activation.
4. AUROC agreement with a dense reference: for every step, StandardScaler() +
   LogisticRegression(C=10, max_iter=1000) fitted on the dense float64 training mix, scored
   with decision_function on the dense eval rows, compared with the tool's saved metrics.
5. Targets (<= 6 s median wall time, <= 0.8 GB peak RSS, AUROC agreement <= 0.005) with
   PASS/FAIL next to the measured values.

Flags: --repeats N, --cache-dir DIR, --work-dir DIR, --skip-scaling, --skip-agreement, --quick
(scaling on the small cells only), --keep, --jobs N (passed to run_all.py), --json PATH.
Exit status: 0 when every run completed (whatever the PASS/FAIL lines say), 1 when a child
run failed, 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LAYER = 40                              # the sweep's default layer (common.DEFAULTS["layer"])
DEMO_SEED = 0                           # demo_data.py defaults: the full-size demo cache
DEMO_SCALE = 1.0
DEMO_FEATURES = 16384
SCALES = (0.5, 1.0, 2.0)                # scaling table: demo `scale` ...
FEATURES = (4096, 16384, 49152)         # ... x SAE width
QUICK_SCALES = (0.5, 1.0)               # --quick: leave out the 2x and 49,152-feature cells
QUICK_FEATURES = (4096, 16384)
TARGET_WALL_S = 6.0
TARGET_RSS_GB = 0.8
TARGET_AUROC_DIFF = 0.005
REF_C = 10.0
REF_MAX_ITER = 1000
POLL_S = 0.05                           # tree RSS sampling interval (s)
SLOW_POLL_S = 0.5                       # descendant rescan + tree PSS sampling interval (s)
PAGE = os.sysconf("SC_PAGE_SIZE")
GB = 1e9

# Child: `python -c CHILD_DRIVER OUT MODULE ARGS...` runs MODULE.main(ARGS) and writes
# {"timings": common.TIMINGS, "vmhwm_bytes": own peak RSS} to OUT, even on failure.
CHILD_DRIVER = """\
import importlib, json, sys
rc = 1
try:
    rc = importlib.import_module(sys.argv[2]).main(sys.argv[3:])
finally:
    hwm = None
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    common = sys.modules.get("common")
    with open(sys.argv[1], "w") as f:
        json.dump({"timings": getattr(common, "TIMINGS", {}), "vmhwm_bytes": hwm}, f)
sys.exit(rc)
"""


# --------------------------------------------------------------------------------------------
# Measuring one child process
# --------------------------------------------------------------------------------------------
def _children_map():
    """ppid -> [pid] of every process visible in /proc."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name is in parentheses and may hold spaces: split after the last ')'
        fields = stat[stat.rfind(b")") + 2:].split()
        out.setdefault(int(fields[1]), []).append(int(entry.name))
    return out


def _rss_bytes(pid):
    """Resident set size of one process (cheap: /proc/<pid>/statm); 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _pss_bytes(pid):
    """Proportional set size of one process (/proc/<pid>/smaps_rollup, which walks the page
    tables: milliseconds for a large process); its RSS when unreadable, 0 when gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return _rss_bytes(pid)


def descendants(root):
    """root and the pids of all its descendants."""
    kids = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


class TreeSampler(threading.Thread):
    """Peak memory of a process tree while it runs.

    Every POLL_S: summed RSS of the known pids and the root's own RSS (statm reads, cheap).
    Every SLOW_POLL_S: rescan /proc for descendants and sum their PSS (the costly part, kept
    rare so the sampler takes little CPU from the run it measures).
    """

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.rss_peak, self.pss_peak, self.own_rss_peak = pid, 0, 0, 0
        self._stop_event = threading.Event()

    def run(self):
        pids, last_slow = [self.pid], -float("inf")
        while not self._stop_event.is_set():
            now = time.monotonic()
            if now - last_slow >= SLOW_POLL_S:
                last_slow = now
                pids = descendants(self.pid)
                self.pss_peak = max(self.pss_peak, sum(_pss_bytes(p) for p in pids))
            rss = [_rss_bytes(p) for p in pids]
            self.rss_peak = max(self.rss_peak, sum(rss))
            self.own_rss_peak = max(self.own_rss_peak, rss[0])
            self._stop_event.wait(POLL_S)

    def stop(self):
        self._stop_event.set()
        self.join()


def run_measured(module, argv, cwd, work_dir, tag):
    """Run MODULE.main(argv) in a fresh `python -c CHILD_DRIVER` process; return {rc, wall_s,
    peak_rss_bytes (child's VmHWM), tree_pss_peak_bytes, tree_rss_peak_bytes (sampled),
    timings (common.TIMINGS), log}.

    stdout and stderr go to <work_dir>/<tag>.log. Wall time runs from just before the fork
    to the reaping of the child, so it covers interpreter start-up, imports and shutdown.
    """
    out_path = Path(work_dir) / f"{tag}.json"
    log_path = Path(work_dir) / f"{tag}.log"
    cmd = [sys.executable, "-c", CHILD_DRIVER, str(out_path), module] + list(argv)
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            sampler.stop()
            raise
        wall = time.perf_counter() - t0
        sampler.stop()
    try:
        child = json.loads(out_path.read_text())
    except (OSError, json.JSONDecodeError):
        child = {}
    # VmHWM missing only if the child died before writing it: fall back to the sampled peak
    own = child.get("vmhwm_bytes") or sampler.own_rss_peak
    return {"rc": rc, "wall_s": wall, "peak_rss_bytes": own,
            "tree_pss_peak_bytes": sampler.pss_peak, "tree_rss_peak_bytes": sampler.rss_peak,
            "timings": child.get("timings", {}), "log": str(log_path)}


def log_tail(path, n=25):
    """Last n lines of a child's log."""
    lines = Path(path).read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])


# --------------------------------------------------------------------------------------------
# Caches
# --------------------------------------------------------------------------------------------
def demo_marker(cache_dir):
    """The DEMO_CACHE.json of a cache, or None."""
    path = Path(cache_dir) / "DEMO_CACHE.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def cache_matches(cache_dir, seed, scale, n_features):
    """True when cache_dir holds a complete demo cache made with these parameters."""
    m = demo_marker(cache_dir)
    return (m is not None and m.get("seed") == seed and float(m.get("scale", -1)) == scale
            and m.get("n_features") == n_features and LAYER in m.get("layers", [])
            and (Path(cache_dir) / f"layer_{LAYER}").is_dir())


def ensure_cache(cache_dir, seed, scale, n_features, work_dir, scratch=False):
    """Reuse or generate (in a measured subprocess) a demo cache; return a description.
    A cache outside the work dir (scratch=False) without DEMO_CACHE.json is never overwritten."""
    cache_dir = Path(cache_dir)
    if cache_matches(cache_dir, seed, scale, n_features):
        return {"generated": False}
    if (not scratch and (cache_dir / f"layer_{LAYER}").is_dir()
            and demo_marker(cache_dir) is None):
        raise SystemExit(f"error: {cache_dir}: holds layer_{LAYER}/ but no DEMO_CACHE.json "
                         "(not a demo cache); refusing to overwrite it")
    argv = ["--out", str(cache_dir), "--seed", str(seed), "--scale", f"{scale:g}",
            "--n-features", str(n_features), "--layers", str(LAYER), "--quiet"]
    print(f"  generating demo cache scale={scale:g} n_features={n_features} in {cache_dir} ...",
          flush=True)
    m = run_measured("demo_data", argv, REPO, work_dir, f"generate_{cache_dir.name}")
    if m["rc"] != 0:
        raise ChildFailed(f"demo generation exited with {m['rc']}; last lines of {m['log']}:\n"
                          + log_tail(m["log"]))
    return {"generated": True, "gen_wall_s": m["wall_s"], "gen_peak_rss_bytes": m["peak_rss_bytes"]}


def cache_size(cache_dir):
    """(rows, features, non-zero activations, bytes of activation files) of one layer."""
    rows = nnz = nbytes = 0
    n_features = None
    for path in sorted((Path(cache_dir) / f"layer_{LAYER}").glob("*_activations.npy")):
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        n_features = arr.shape[1]
        step = max(1, (64 << 20) // max(1, arr.shape[1] * arr.itemsize))   # ~64 MB per chunk
        for r in range(0, arr.shape[0], step):
            nnz += int(np.count_nonzero(arr[r:r + step]))
        rows += arr.shape[0]
        nbytes += path.stat().st_size
        del arr
    return {"rows": rows, "features": n_features, "nnz": nnz, "bytes": nbytes}


# --------------------------------------------------------------------------------------------
# Sweep runs
# --------------------------------------------------------------------------------------------
def sweep_argv(cache_dir, results_dir, jobs):
    """run_all.py arguments of the default sweep."""
    argv = ["--cache-dir", str(cache_dir), "--results-dir", str(results_dir), "--quiet"]
    if jobs is not None:
        argv += ["--jobs", str(jobs)]
    return argv


def run_sweep(cache_dir, results_dir, jobs, work_dir, tag):
    """One measured run of the sweep in a fresh subprocess; dict with timings."""
    m = run_measured("run_all", sweep_argv(cache_dir, results_dir, jobs), REPO, work_dir,
                     f"run_{tag}")
    if m["rc"] != 0:
        raise ChildFailed(f"run {tag} exited with {m['rc']}; last lines of {m['log']}:\n"
                          + log_tail(m["log"]))
    return m


class ChildFailed(Exception):
    """A benchmarked subprocess exited non-zero."""


def spread(values):
    """{median, min, max} of a list of numbers."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# --------------------------------------------------------------------------------------------
# AUROC agreement with the dense reference
# --------------------------------------------------------------------------------------------
def dense_reference_agreement(cache_dir, results_dir):
    """Per step and eval set: the tool's metrics (from its step JSON) vs the dense reference."""
    import common
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    names = [n for n in common.DATASETS
             if not common.missing_files(cache_dir, LAYER, [n])]
    datasets, _, _ = common.load_cache(cache_dir, LAYER, names, warn=lambda m: None)
    rows, fits = [], []
    splits_by_seed = {}
    for step in common.STEPS:
        path = Path(results_dir) / f"step_{step.number}_{step.slug}.json"
        record = json.loads(path.read_text())
        cfg = record["config"]
        key = (cfg["seed"], cfg["eval_fraction"])
        if key not in splits_by_seed:
            splits_by_seed[key] = common.make_splits(datasets, cfg["eval_fraction"], cfg["seed"])
        splits = splits_by_seed[key]
        mix = common.build_mix(step, datasets, splits)
        X = mix.X.toarray().astype(np.float64)
        ref = make_pipeline(StandardScaler(), LogisticRegression(C=REF_C, max_iter=REF_MAX_ITER))
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            ref.fit(X, mix.y)
        fits.append({"step": step.number, "n_train": int(X.shape[0]),
                     "fit_s": time.perf_counter() - t0,
                     "n_iter": int(np.max(ref[-1].n_iter_)),
                     "converged": not any(issubclass(w.category, ConvergenceWarning)
                                          for w in caught)})
        del X
        scores = {}
        for name, ds, idx in common.eval_sets(datasets, splits):
            scores[name] = (ref.decision_function(ds.X[idx].toarray().astype(np.float64)),
                            ds.y[idx])
        for name, (s, y) in scores.items():
            tool = record["evaluation"][name]
            if len(np.unique(y)) == 2:
                rows.append(_agree(step, name, "AUROC", tool["auroc"], roc_auc_score(y, s)))
                continue
            rows.append(_agree(step, name, "detection rate", tool["detection_rate"],
                               float(np.mean(s >= 0))))
            ref_name = common.DATASETS[name].reference
            if ref_name in scores and tool.get("auroc_vs_reference_negatives") is not None:
                rs, ry = scores[ref_name]
                neg = rs[ry == 0]
                yy = np.r_[np.ones(len(s)), np.zeros(len(neg))]
                rows.append(_agree(step, name, f"AUROC vs {ref_name} neg.",
                                   tool["auroc_vs_reference_negatives"],
                                   roc_auc_score(yy, np.r_[s, neg])))
    return {"rows": rows, "reference_fits": fits}


def _agree(step, name, metric, tool, ref):
    """One agreement row."""
    return {"step": step.number, "eval_set": name, "metric": metric, "tool": float(tool),
            "reference": float(ref), "abs_diff": abs(float(tool) - float(ref))}


# --------------------------------------------------------------------------------------------
# Text output
# --------------------------------------------------------------------------------------------
def table(header, rows, left=1):
    """Plain aligned text: the first `left` columns left-aligned, the rest right-aligned."""
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r):
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    return "\n".join(["  " + line(header), "  " + "  ".join("-" * w for w in widths)]
                     + ["  " + line(r) for r in cells[1:]])


def verdict(ok):
    """PASS / FAIL."""
    return "PASS" if ok else "FAIL"


def gb(nbytes):
    """Bytes as GB (10^9) with 3 decimals."""
    return f"{nbytes / GB:.3f}"


PHASE_ORDER = ("load", "leakage audit", "build mix", "fit + CV", "evaluate", "statistics",
               "write", "analysis", "report, figures, dashboard")


def print_runs(runs):
    """End-to-end and per-phase tables of the repeated runs."""
    n = len(runs)
    walls = [r["wall_s"] for r in runs]
    rss = [r["peak_rss_bytes"] for r in runs]
    pss = [r["tree_pss_peak_bytes"] for r in runs]
    tree_rss = [r["tree_rss_peak_bytes"] for r in runs]
    print(f"\nEnd to end, {n} run(s) (subprocess start to exit)")
    rows = []
    for label, vals, fmt in (("wall time (s)", walls, lambda v: f"{v:.2f}"),
                             ("peak RSS, main process (GB)", rss, gb),
                             ("peak PSS sum, process tree (GB)", pss, gb),
                             ("peak RSS sum, process tree (GB)", tree_rss, gb)):
        s = spread(vals)
        rows.append([label, fmt(s["median"]), fmt(s["min"]), fmt(s["max"]),
                     "  ".join(fmt(v) for v in vals)])
    print(table(["", "median", "min", "max", "runs"], rows))

    phases = list(PHASE_ORDER) + sorted({p for r in runs for p in r["timings"]} - set(PHASE_ORDER))
    phases = [p for p in phases if any(p in r["timings"] for r in runs)]
    med_wall = statistics.median(walls)
    rows = []
    for p in phases:
        s = spread([r["timings"].get(p, 0.0) for r in runs])
        rows.append([p, f"{s['median']:.2f}", f"{s['min']:.2f}", f"{s['max']:.2f}",
                     f"{100 * s['median'] / med_wall:.0f}%"])
    other = spread([r["wall_s"] - sum(r["timings"].values()) for r in runs])
    rows.append(["other (start-up, imports, untimed)", f"{other['median']:.2f}",
                 f"{other['min']:.2f}", f"{other['max']:.2f}",
                 f"{100 * other['median'] / med_wall:.0f}%"])
    print(f"\nPer phase (common.TIMINGS, wall s, {n} run(s))")
    print(table(["phase", "median", "min", "max", "of wall"], rows))


def print_scaling(cells):
    """The scaling table."""
    print("\nScaling (one run per cell; cost per non-zero activation of the cache)")
    rows = []
    for c in cells:
        t = c["timings"]
        rows.append([f"{c['scale']:g}x", str(c["features"]), str(c["rows"]),
                     f"{c['nnz'] / 1e6:.1f}", f"{c['bytes'] / GB:.2f}",
                     f"{c['wall_s']:.1f}", f"{t.get('load', 0):.1f}", f"{t.get('fit + CV', 0):.1f}",
                     gb(c["peak_rss_bytes"]), gb(c["tree_pss_peak_bytes"]),
                     f"{1e9 * c['wall_s'] / c['nnz']:.0f}",
                     f"{c['peak_rss_bytes'] / c['nnz']:.1f}",
                     f"{c['tree_pss_peak_bytes'] / c['nnz']:.1f}",
                     "-" if c.get("gen_wall_s") is None else f"{c['gen_wall_s']:.0f}",
                     "-" if c.get("gen_peak_rss_bytes") is None else gb(c["gen_peak_rss_bytes"])])
    print(table(["samples", "features", "rows", "nnz (M)", "cache GB", "wall s", "load s",
                 "fit+CV s", "RSS GB", "tree GB", "ns/nnz", "RSS B/nnz", "tree B/nnz",
                 "gen s", "gen RSS GB"], rows, left=0))
    print("  RSS = peak RSS of the main process (VmHWM); tree = sampled peak PSS sum "
          "of the process tree;\n  gen = demo generation (excluded from wall s; '-' = cache "
          "reused)")


def print_agreement(agree):
    """Agreement table and its maximum per metric kind."""
    print("\nAgreement with the dense reference (StandardScaler + LogisticRegression(C=10, "
          "max_iter=1000), float64)")
    rows = [[str(r["step"]), r["eval_set"], r["metric"], f"{r['tool']:.6f}",
             f"{r['reference']:.6f}", f"{r['abs_diff']:.1e}"] for r in agree["rows"]]
    print(table(["step", "eval set", "metric", "tool", "reference", "|diff|"], rows, left=3))
    fits = agree["reference_fits"]
    print("  reference fits: " + "; ".join(
        f"step {f['step']} n={f['n_train']} {f['fit_s']:.0f}s {f['n_iter']} it"
        f"{'' if f['converged'] else ' NOT CONVERGED'}" for f in fits))


def agreement_summary(agree):
    """{metric kind: max |diff|} for AUROCs on two-class sets, detection rates, ref-neg AUROCs."""
    kinds = {"AUROC (two-class sets)": lambda m: m == "AUROC",
             "detection rate (all-AF sets)": lambda m: m == "detection rate",
             "AUROC vs reference negatives (all-AF sets)": lambda m: m.startswith("AUROC vs")}
    return {k: max((r["abs_diff"] for r in agree["rows"] if f(r["metric"])), default=None)
            for k, f in kinds.items()}


def print_targets(runs, agree):
    """Targets next to the measured values."""
    out = []
    wall = statistics.median(r["wall_s"] for r in runs)
    rss = max(r["peak_rss_bytes"] for r in runs)
    tree = max(r["tree_pss_peak_bytes"] for r in runs)
    out.append(["wall time, median of runs", f"<= {TARGET_WALL_S:g} s", f"{wall:.2f} s",
                verdict(wall <= TARGET_WALL_S)])
    out.append(["peak RSS, main process, max of runs", f"<= {TARGET_RSS_GB:g} GB",
                f"{gb(rss)} GB", verdict(rss <= TARGET_RSS_GB * GB)])
    out.append(["peak PSS sum, process tree, max of runs", f"<= {TARGET_RSS_GB:g} GB",
                f"{gb(tree)} GB", verdict(tree <= TARGET_RSS_GB * GB)])
    if agree:
        for kind, v in agreement_summary(agree).items():
            if v is not None:
                out.append([f"max |diff| {kind}", f"<= {TARGET_AUROC_DIFF:g}", f"{v:.1e}",
                            verdict(v <= TARGET_AUROC_DIFF)])
    print("\nTargets")
    print(table(["", "target", "measured", ""], out))
    return [dict(zip(("what", "target", "measured", "verdict"), r)) for r in out]


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------
def parse_args(argv):
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="end-to-end runs of the default sweep")
    p.add_argument("--cache-dir", type=Path, default=REPO / "cache" / "demo",
                   help="full-size demo cache (generated here unless DEMO_CACHE.json matches)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="scratch folder for results and scaling caches (default: a new temp dir)")
    p.add_argument("--skip-scaling", action="store_true", help="no scaling table")
    p.add_argument("--skip-agreement", action="store_true", help="no dense-reference check")
    p.add_argument("--quick", action="store_true",
                   help="scaling on 0.5x/1x samples and 4,096/16,384 features only")
    p.add_argument("--keep", action="store_true",
                   help="keep the work dir (scaling caches, results, logs)")
    p.add_argument("--jobs", type=int, default=None,
                   help="passed to run_all.py --jobs (default: run_all.py's own default)")
    p.add_argument("--json", type=Path, default=None, help="also write every number here")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats: must be >= 1")
    return args


def main(argv=None):
    """Run the benchmark; see the module docstring."""
    args = parse_args(argv)
    import numpy
    import scipy
    import sklearn
    made_work_dir = args.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="bench_sweep_")) if made_work_dir else args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    created = []                                   # paths under work to delete unless --keep
    doc = {"command": [sys.executable] + sys.argv, "machine": {
        "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": numpy.__version__,
        "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
        "loadavg_at_start": os.getloadavg()},
        "targets": {"wall_s": TARGET_WALL_S, "peak_rss_gb": TARGET_RSS_GB,
                    "auroc_abs_diff": TARGET_AUROC_DIFF}}
    try:
        print("bench_sweep: default distribution sweep, end to end")
        m = doc["machine"]
        print(f"  machine: {m['cpus']} CPUs, Python {m['python']}, numpy {m['numpy']}, "
              f"scipy {m['scipy']}, scikit-learn {m['scikit-learn']}, load average "
              + " ".join(f"{x:.2f}" for x in m["loadavg_at_start"]))
        print(f"  work dir: {work}")
        gen = ensure_cache(args.cache_dir, DEMO_SEED, DEMO_SCALE, DEMO_FEATURES, work)
        size = cache_size(args.cache_dir)
        doc["cache"] = {"path": str(args.cache_dir), **gen, **size}
        print(f"  cache: {args.cache_dir} ("
              + (f"generated in {gen['gen_wall_s']:.1f} s, peak RSS "
                 f"{gb(gen['gen_peak_rss_bytes'])} GB" if gen["generated"] else "reused")
              + f"): {size['rows']} rows x {size['features']} features, "
              f"{size['nnz'] / 1e6:.1f} M non-zeros, {size['bytes'] / GB:.2f} GB on disk")
        print("  run: python -c <driver: run_all.main(argv), dump common.TIMINGS, VmHWM> "
              + " ".join(sweep_argv(args.cache_dir, "<tmp>", args.jobs)))
        print("  memory: main process = VmHWM of the child (/proc/self/status); process tree = "
              f"child + descendants summed, PSS sampled every {SLOW_POLL_S:g} s, RSS every "
              f"{POLL_S:g} s, from /proc")

        runs = []
        first_results = work / "results_run1"
        for i in range(args.repeats):
            results = work / f"results_run{i + 1}"
            created.append(results)
            print(f"  run {i + 1}/{args.repeats} ...", end="", flush=True)
            r = run_sweep(args.cache_dir, results, args.jobs, work, f"run{i + 1}")
            print(f" {r['wall_s']:.1f} s, peak RSS {gb(r['peak_rss_bytes'])} GB", flush=True)
            runs.append(r)
            if i > 0 and not args.keep:
                shutil.rmtree(results, ignore_errors=True)
        doc["runs"] = runs
        doc["summary"] = {"wall_s": spread([r["wall_s"] for r in runs]),
                          "peak_rss_bytes": spread([r["peak_rss_bytes"] for r in runs]),
                          "tree_pss_peak_bytes": spread([r["tree_pss_peak_bytes"] for r in runs]),
                          "tree_rss_peak_bytes": spread([r["tree_rss_peak_bytes"] for r in runs]),
                          "phases": {p: spread([r["timings"].get(p, 0.0) for r in runs])
                                     for p in {p for r in runs for p in r["timings"]}}}
        print_runs(runs)

        cells = []
        if not args.skip_scaling:
            scales = QUICK_SCALES if args.quick else SCALES
            feats = QUICK_FEATURES if args.quick else FEATURES
            print(f"\n  scaling: {len(scales) * len(feats)} cells"
                  f"{' (--quick: largest cells skipped)' if args.quick else ''}", flush=True)
            for scale in scales:
                for nf in feats:
                    default = (scale == DEMO_SCALE and nf == DEMO_FEATURES
                               and cache_matches(args.cache_dir, DEMO_SEED, DEMO_SCALE,
                                                 DEMO_FEATURES))
                    cache = (args.cache_dir if default
                             else work / f"cache_s{scale:g}_f{nf}")
                    if not default:
                        created.append(cache)
                    g = ensure_cache(cache, DEMO_SEED, scale, nf, work, scratch=not default)
                    sz = cache_size(cache)
                    results = work / f"results_s{scale:g}_f{nf}"
                    created.append(results)
                    print(f"  cell {scale:g}x / {nf}: {sz['rows']} rows, "
                          f"{sz['nnz'] / 1e6:.0f} M nnz ...", end="", flush=True)
                    r = run_sweep(cache, results, args.jobs, work, f"s{scale:g}_f{nf}")
                    print(f" {r['wall_s']:.1f} s, peak RSS {gb(r['peak_rss_bytes'])} GB",
                          flush=True)
                    cells.append({"scale": scale, "features": nf, **sz, **r,
                                  "gen_wall_s": g.get("gen_wall_s"),
                                  "gen_peak_rss_bytes": g.get("gen_peak_rss_bytes")})
                    if not args.keep:
                        shutil.rmtree(results, ignore_errors=True)
                        if not default:
                            shutil.rmtree(cache, ignore_errors=True)
            doc["scaling"] = cells
            print_scaling(cells)

        agree = None
        if not args.skip_agreement:
            print("\n  agreement: fitting the dense reference for every step ...", flush=True)
            agree = dense_reference_agreement(args.cache_dir, first_results)
            agree["max_abs_diff"] = agreement_summary(agree)
            doc["agreement"] = agree
            print_agreement(agree)

        doc["verdicts"] = print_targets(runs, agree)
        print("  (timings on a shared machine are noisy; peak RSS is the max over runs)")
    except ChildFailed as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    finally:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        if not args.keep:
            for path in created:
                shutil.rmtree(path, ignore_errors=True)
            for f in list(work.glob("run_*.json")) + list(work.glob("generate_*.json")) \
                    + list(work.glob("*.log")):
                f.unlink(missing_ok=True)
            if made_work_dir:
                shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
