"""python benchmarks/bench_sweep.py [--compare-ref main] [--repeats 3] [--quick] [--json bench.json]

Benchmark of the default distribution sweep (4 steps, 5-fold CV, 4 eval sets, closed-form intervals)
on the full-size synthetic demo cache:

1. End to end: `run_all.py --cache-dir <cache> --results-dir <tmp> --quiet` in a fresh
   subprocess per run; wall time is process start to exit (demo generation excluded). Each
   child dumps `sweeplib.base.TIMINGS` (per-phase wall seconds) to a JSON file. This checkout's runs
   keep their sparse sidecars in the work dir (--sidecar-dir): the first run converts the
   dense files and writes them (reported as the cold run), the timed runs read them.
2. --compare-ref REV: the same sweep from git revision REV (exported with `git archive` into
   the work dir, run with the same Python), alternating with this checkout's runs; wall time,
   memory and every phase side by side, and whether the two give identical numbers.
3. Peak memory of every child: main process VmHWM (read by the child from /proc/self/status;
   not ru_maxrss, which Linux seeds with the parent's peak at fork) and the process tree's
   summed PSS (child + descendants: audit and figure processes, workers), sampled from /proc.
4. The original research scripts, emulated (benchmarks/original_scripts.py: dense float64
   np.load, StandardScaler + LogisticRegression(C=10, max_iter=1000), 5-fold cross_val_score
   per step, same mixes and eval sets), steps 0-3 one process each; their summed wall time
   against ours, and the agreement of our AUROCs / detection rates with their dense fits.
5. Scaling: one run per cell of {0.5x, 1x, 2x samples} x {4,096, 16,384, 49,152 features}.
6. Targets, PASS/FAIL: >= 2x faster than REV (median wall), identical numbers to REV, original
   scripts >= 5x slower than ours, main-process peak RSS <= 0.55 GB, agreement <= 0.005.

Flags: --repeats N, --cache-dir DIR, --work-dir DIR, --compare-ref REV, --skip-original,
--skip-scaling, --quick, --keep, --jobs N, --json PATH. Exit status: 0 when every run
completed (whatever the PASS/FAIL lines say), 1 when a child run failed, 2 on bad arguments.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare  # noqa: E402

LAYER = 40                              # the sweep's default layer (common.DEFAULTS["layer"])
DEMO_SEED = 0                           # demo_data.py defaults: the full-size demo cache
DEMO_SCALE = 1.0
DEMO_FEATURES = 16384
SCALES = (0.5, 1.0, 2.0)                # scaling table: demo `scale` ...
FEATURES = (4096, 16384, 49152)         # ... x SAE width
QUICK_SCALES = (0.5, 1.0)               # --quick: leave out the 2x and 49,152-feature cells
QUICK_FEATURES = (4096, 16384)
TARGET_SPEEDUP = 2.0                    # reference revision's median wall / ours
TARGET_ORIGINAL = 5.0                   # original scripts' wall / ours
TARGET_RSS_GB = 0.55                    # main process peak RSS
TARGET_AUROC_DIFF = 0.005
POLL_S = 0.05                           # tree RSS sampling interval (s)
SLOW_POLL_S = 0.5                       # descendant rescan + tree PSS sampling interval (s)
PAGE = os.sysconf("SC_PAGE_SIZE")
GB = 1e9

# Child: `python -c CHILD_DRIVER OUT MODULE ARGS...` runs MODULE.main(ARGS) and writes
# {"timings": sweeplib.base.TIMINGS, "vmhwm_bytes": own peak RSS} to OUT, even on failure.
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
    timing = sys.modules.get("sweeplib.base") or sys.modules.get("common")   # older revisions
    with open(sys.argv[1], "w") as f:
        json.dump({"timings": getattr(timing, "TIMINGS", {}), "vmhwm_bytes": hwm}, f)
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
    cpu_s (user + system CPU of the child and every process it reaped: audit, figure and
    worker processes), peak_rss_bytes (child's VmHWM), tree_pss_peak_bytes,
    tree_rss_peak_bytes (sampled), timings (sweeplib.base.TIMINGS), log}.

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
            _, status, usage = os.wait4(proc.pid, 0)     # rusage: the child + what it reaped
            proc.returncode = rc = os.waitstatus_to_exitcode(status)
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
    return {"rc": rc, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_bytes": own,
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
def sweep_argv(cache_dir, results_dir, jobs, extra=()):
    """run_all.py arguments of the default sweep."""
    argv = ["--cache-dir", str(cache_dir), "--results-dir", str(results_dir), "--quiet"]
    if jobs is not None:
        argv += ["--jobs", str(jobs)]
    return argv + list(extra)


def run_sweep(cache_dir, results_dir, jobs, work_dir, tag, repo=REPO, extra=()):
    """One measured run of the sweep (from `repo`) in a fresh subprocess; dict with timings."""
    m = run_measured("run_all", sweep_argv(cache_dir, results_dir, jobs, extra), repo, work_dir,
                     f"run_{tag}")
    if m["rc"] != 0:
        raise ChildFailed(f"run {tag} exited with {m['rc']}; last lines of {m['log']}:\n"
                          + log_tail(m["log"]))
    return m


def run_original(cache_dir, work_dir):
    """The emulated original scripts, steps 0-3 one process each: (summed wall s, summed CPU
    s, largest peak RSS, per-step metrics)."""
    here = Path(__file__).resolve().parent
    wall, cpu, peak, metrics = 0.0, 0.0, 0, []
    for k in range(4):
        out = Path(work_dir) / f"original_{k}_metrics.json"
        m = run_measured("original_scripts", ["--cache-dir", str(cache_dir), "--step", str(k),
                                              "--out", str(out)], here, work_dir, f"original_{k}")
        if m["rc"] != 0:
            raise ChildFailed(f"original scripts, step {k}: exit {m['rc']}; last lines of "
                              f"{m['log']}:\n" + log_tail(m["log"]))
        print(f"    step {k}: {m['wall_s']:.1f} s, peak RSS {gb(m['peak_rss_bytes'])} GB",
              flush=True)
        wall += m["wall_s"]
        cpu += m["cpu_s"]
        peak = max(peak, m["peak_rss_bytes"])
        metrics.append(json.loads(out.read_text()))
    return wall, cpu, peak, metrics


class ChildFailed(Exception):
    """A benchmarked subprocess exited non-zero."""


def spread(values):
    """{median, min, max} of a list of numbers."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


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


PHASE_ORDER = ("load", "leakage audit", "leakage audit (wait)", "plan", "fit + CV",
               "evaluate", "statistics", "write", "analysis", "report, figures, dashboard")


def print_runs(runs, title="End to end"):
    """End-to-end and per-phase tables of the repeated runs."""
    n = len(runs)
    walls = [r["wall_s"] for r in runs]
    rss = [r["peak_rss_bytes"] for r in runs]
    pss = [r["tree_pss_peak_bytes"] for r in runs]
    tree_rss = [r["tree_rss_peak_bytes"] for r in runs]
    print(f"\n{title}, {n} run(s) (subprocess start to exit)")
    rows = []
    for label, vals, fmt in (("wall time (s)", walls, lambda v: f"{v:.2f}"),
                             ("CPU time, process tree (s)", [r["cpu_s"] for r in runs],
                              lambda v: f"{v:.2f}"),
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
    other = spread([compare.other(r) for r in runs])
    rows.append(["other (start-up, imports, untimed)", f"{other['median']:.2f}",
                 f"{other['min']:.2f}", f"{other['max']:.2f}",
                 f"{100 * other['median'] / med_wall:.0f}%"])
    print(f"\nPer phase (sweeplib.base.TIMINGS, wall s, {n} run(s); '{compare.BACKGROUND}' phases ran "
          "next to others and are not part of the sum)")
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
    print("\nAgreement with the original scripts' dense fits (StandardScaler + "
          "LogisticRegression(C=10, max_iter=1000), float64)")
    rows = [[str(r["step"]), r["eval_set"], r["metric"], f"{r['tool']:.6f}",
             f"{r['reference']:.6f}", f"{r['abs_diff']:.1e}"] for r in agree["rows"]]
    print(table(["step", "eval set", "metric", "tool", "reference", "|diff|"], rows, left=3))
    fits = agree["reference_fits"]
    print("  dense fits (5 CV folds + final): " + "; ".join(
        f"step {f['step']} n={f['n_train']} {f['fit_s']:.0f}s {f['n_iter']} it"
        f"{'' if f['converged'] else ' NOT CONVERGED'}" for f in fits))


def agreement_summary(agree):
    """{metric kind: max |diff|} for AUROCs on two-class sets, detection rates, ref-neg AUROCs."""
    kinds = {"AUROC (two-class sets)": lambda m: m == "AUROC",
             "detection rate (all-AF sets)": lambda m: m == "detection rate",
             "AUROC vs reference negatives (all-AF sets)": lambda m: m.startswith("AUROC vs")}
    return {k: max((r["abs_diff"] for r in agree["rows"] if f(r["metric"])), default=None)
            for k, f in kinds.items()}


def print_targets(runs, ref_runs, same, original, agree):
    """Targets next to the measured values."""
    out = []
    wall = statistics.median(r["wall_s"] for r in runs)
    if ref_runs:
        ratio = statistics.median(r["wall_s"] for r in ref_runs) / wall
        out.append(["speed-up over the reference revision (median wall)",
                    f">= {TARGET_SPEEDUP:g}x", f"{ratio:.2f}x", verdict(ratio >= TARGET_SPEEDUP)])
        out.append(["numbers identical to the reference revision", "yes",
                    "yes" if same["identical"] else f"no ({len(same['differences'])} fields)",
                    verdict(same["identical"])])
    if original:
        ratio = original["wall_s"] / wall
        out.append(["original scripts' wall / ours", f">= {TARGET_ORIGINAL:g}x",
                    f"{ratio:.1f}x", verdict(ratio >= TARGET_ORIGINAL)])
    rss = max(r["peak_rss_bytes"] for r in runs)
    out.append(["peak RSS, main process, max of runs", f"<= {TARGET_RSS_GB:g} GB",
                f"{gb(rss)} GB", verdict(rss <= TARGET_RSS_GB * GB)])
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
    p.add_argument("--compare-ref", default=None, metavar="REV",
                   help="also run git revision REV (e.g. main) side by side, alternating runs")
    p.add_argument("--extra", default="", metavar="ARGS",
                   help="extra run_all.py arguments for this checkout's runs only, e.g. "
                        "--extra=--no-figures")
    p.add_argument("--skip-original", action="store_true",
                   help="do not run the emulated original scripts (nor their agreement check)")
    p.add_argument("--skip-scaling", action="store_true", help="no scaling table")
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


def timed_runs(args, work, created, ref_dir):
    """The cold run, then --repeats alternating pairs (this checkout / the reference, the
    order switching each time); returns (cold run, runs, reference runs)."""
    ours = ["--sidecar-dir", str(work / "sidecars")] + args.extra.split()
    created.append(work / "sidecars")

    def one(tag, repo=REPO, extra=ours):
        results = work / f"results_{tag}"
        created.append(results)
        print(f"  {tag} ...", end="", flush=True)
        r = run_sweep(args.cache_dir, results, args.jobs, work, tag, repo, extra)
        print(f" {r['wall_s']:.1f} s, peak RSS {gb(r['peak_rss_bytes'])} GB", flush=True)
        r["results"] = str(results)
        return r

    cold = one("cold")                      # converts the dense files, writes the sidecars
    runs, ref_runs = [], []
    for i in range(args.repeats):
        pair = [("ours", None), ("ref", ref_dir)] if i % 2 == 0 else [("ref", ref_dir),
                                                                      ("ours", None)]
        for who, repo in pair:
            if who == "ours":
                runs.append(one(f"ours{i + 1}"))
            elif repo is not None:
                ref_runs.append(one(f"ref{i + 1}", repo, ()))
    return cold, runs, ref_runs


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
        "targets": {"speedup": TARGET_SPEEDUP, "original_ratio": TARGET_ORIGINAL,
                    "peak_rss_gb": TARGET_RSS_GB, "auroc_abs_diff": TARGET_AUROC_DIFF}}
    try:
        print("bench_sweep: default distribution sweep, end to end")
        m = doc["machine"]
        print(f"  machine: {m['cpus']} CPUs, Python {m['python']}, numpy {m['numpy']}, "
              f"scipy {m['scipy']}, scikit-learn {m['scikit-learn']}, load average "
              + " ".join(f"{x:.2f}" for x in m["loadavg_at_start"]))
        print(f"  work dir: {work}")
        ref_dir = None
        if args.compare_ref:
            ref_dir, commit = compare.export_revision(REPO, args.compare_ref, work / "reference")
            created.append(ref_dir)
            doc["reference"] = {"rev": args.compare_ref, "commit": commit}
            print(f"  reference: {args.compare_ref} = {commit[:12]} (git archive into {ref_dir})")
        gen = ensure_cache(args.cache_dir, DEMO_SEED, DEMO_SCALE, DEMO_FEATURES, work)
        size = cache_size(args.cache_dir)
        doc["cache"] = {"path": str(args.cache_dir), **gen, **size}
        print(f"  cache: {args.cache_dir} ("
              + (f"generated in {gen['gen_wall_s']:.1f} s, peak RSS "
                 f"{gb(gen['gen_peak_rss_bytes'])} GB" if gen["generated"] else "reused")
              + f"): {size['rows']} rows x {size['features']} features, "
              f"{size['nnz'] / 1e6:.1f} M non-zeros, {size['bytes'] / GB:.2f} GB on disk")
        print("  run: python -c <driver: run_all.main(argv), dump sweeplib.base.TIMINGS, VmHWM> "
              + " ".join(sweep_argv(args.cache_dir, "<tmp>", args.jobs,
                                    ["--sidecar-dir", "<work>/sidecars"] + args.extra.split())))
        print("  memory: main process = VmHWM of the child (/proc/self/status); process tree = "
              f"child + descendants summed, PSS sampled every {SLOW_POLL_S:g} s, RSS every "
              f"{POLL_S:g} s, from /proc")

        cold, runs, ref_runs = timed_runs(args, work, created, ref_dir)
        sidecar_bytes = sum(p.stat().st_size for p in (work / "sidecars").glob("*"))
        doc.update({"cold_run": cold, "runs": runs, "reference_runs": ref_runs,
                    "sidecar_bytes": sidecar_bytes})
        print(f"\nCold run (dense files converted, sparse sidecars written: "
              f"{sidecar_bytes / GB:.3f} GB on disk for {size['bytes'] / GB:.2f} GB dense): "
              f"{cold['wall_s']:.2f} s, load {cold['timings'].get('load', 0):.2f} s")
        print_runs(runs, "This checkout (sidecars warm)")
        same = None
        if ref_runs:
            print_runs(ref_runs, f"Reference {args.compare_ref}")
            print(f"\nSide by side ({len(runs)} alternating pairs; load average now "
                  + " ".join(f"{x:.2f}" for x in os.getloadavg()) + ")")
            print(compare.side_by_side(runs, ref_runs, gb, table))
            same = compare.results_agreement(runs[0]["results"], ref_runs[0]["results"])
            doc["reference_agreement"] = same
            print(f"  numbers: {same['steps']} step records compared on "
                  f"{', '.join(compare.COMPARED)}: "
                  + ("identical" if same["identical"] else
                     f"{len(same['differences'])} differences, largest {same['max_abs_diff']:.2e}"
                     f" ({same['differences'][:4]})"))

        original, agree = None, None
        if not args.skip_original:
            print("\n  original research scripts (emulated), steps 0-3 ...", flush=True)
            wall, cpu, peak, metrics = run_original(args.cache_dir, work)
            original = {"wall_s": wall, "cpu_s": cpu, "peak_rss_bytes": peak}
            ratio = wall / statistics.median(r["wall_s"] for r in runs)
            cpu_ratio = cpu / statistics.median(r["cpu_s"] for r in runs)
            print(f"  original scripts: {wall:.1f} s wall ({cpu:.1f} CPU-s) in all, peak RSS "
                  f"{gb(peak)} GB: {ratio:.1f}x our median wall time, {cpu_ratio:.1f}x our "
                  "median CPU time")
            agree = compare.original_agreement(metrics, runs[0]["results"])
            agree["max_abs_diff"] = agreement_summary(agree)
            doc["original"], doc["agreement"] = original, agree
            print_agreement(agree)

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
                    r = run_sweep(cache, results, args.jobs, work, f"s{scale:g}_f{nf}",
                                  extra=["--sidecar-dir", str(work / "sidecars")])
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

        doc["verdicts"] = print_targets(runs, ref_runs, same, original, agree)
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
                    + list(work.glob("original_*.json")) + list(work.glob("*.log")):
                f.unlink(missing_ok=True)
            if made_work_dir:
                shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
