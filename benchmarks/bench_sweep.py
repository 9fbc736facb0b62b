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
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare  # noqa: E402
from bench_caches import cache_matches, cache_size, ensure_cache  # noqa: E402
from bench_measure import POLL_S, SLOW_POLL_S, ChildFailed, log_tail, run_measured  # noqa: E402
from bench_tables import (GB, TARGET_AUROC_DIFF, TARGET_ORIGINAL, TARGET_RSS_GB,  # noqa: E402
                          TARGET_SPEEDUP, agreement_summary, gb, print_agreement, print_runs,
                          print_scaling, print_targets)
from bench_tables import table as table_text  # noqa: E402

DEMO_SEED = 0                           # demo_data.py defaults: the full-size demo cache
DEMO_SCALE = 1.0
DEMO_FEATURES = 16384
SCALES = (0.5, 1.0, 2.0)                # scaling table: demo `scale` ...
FEATURES = (4096, 16384, 49152)         # ... x SAE width
QUICK_SCALES = (0.5, 1.0)               # --quick: leave out the 2x and 49,152-feature cells
QUICK_FEATURES = (4096, 16384)
WIDE_CELLS = ((1.0, 262144), (4.0, 262144))   # --wide: sparse .npz caches at the real density


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
                        "--extra=--figures")
    p.add_argument("--skip-original", action="store_true",
                   help="do not run the emulated original scripts (nor their agreement check)")
    p.add_argument("--skip-scaling", action="store_true", help="no scaling table")
    p.add_argument("--wide", action="store_true",
                   help="add the sparse 262,144-feature cells (1x and 4x rows) to the scaling")
    p.add_argument("--wide-only", action="store_true",
                   help="only the sparse 262,144-feature scaling cells (nothing else)")
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



# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------
def main(argv=None):
    """Run the benchmark; see the module docstring."""
    args = parse_args(argv)
    made_work_dir = args.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="bench_sweep_")) if made_work_dir else args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    created = []                                   # paths under work to delete unless --keep
    doc = _start_document()
    try:
        _run_benchmark(args, work, created, doc)
    except ChildFailed as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    finally:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        if not args.keep:
            _clean_up(work, created, made_work_dir)
    if args.json:
        print(f"\nwrote {args.json}")
    return 0


def _start_document():
    """The JSON document's machine and targets."""
    import numpy
    import scipy
    import sklearn
    return {"command": [sys.executable] + sys.argv, "machine": {
        "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": numpy.__version__,
        "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
        "loadavg_at_start": os.getloadavg()},
        "targets": {"speedup": TARGET_SPEEDUP, "original_ratio": TARGET_ORIGINAL,
                    "peak_rss_gb": TARGET_RSS_GB, "auroc_abs_diff": TARGET_AUROC_DIFF}}


def _run_benchmark(args, work, created, doc):
    """Every part of the benchmark the flags ask for, recorded in doc."""
    print("bench_sweep: default distribution sweep, end to end")
    m = doc["machine"]
    print(f"  machine: {m['cpus']} CPUs, Python {m['python']}, numpy {m['numpy']}, "
          f"scipy {m['scipy']}, scikit-learn {m['scikit-learn']}, load average "
          + " ".join(f"{x:.2f}" for x in m["loadavg_at_start"]))
    print(f"  work dir: {work}")
    if args.wide_only:
        doc["scaling"] = [_scaling_cell(args, work, created, sc, nf, sparse=True)
                          for sc, nf in WIDE_CELLS]
        print_scaling(doc["scaling"])
        return
    ref_dir = None
    if args.compare_ref:
        ref_dir, commit = compare.export_revision(REPO, args.compare_ref, work / "reference")
        created.append(ref_dir)
        doc["reference"] = {"rev": args.compare_ref, "commit": commit}
        print(f"  reference: {args.compare_ref} = {commit[:12]} (git archive into {ref_dir})")
    size = _describe_cache(args, work, doc)
    cold, runs, ref_runs = timed_runs(args, work, created, ref_dir)
    same = _report_runs(args, work, doc, size, cold, runs, ref_runs)
    original, agree = (None, None) if args.skip_original else _original(args, work, doc, runs)
    if not args.skip_scaling:
        doc["scaling"] = _scaling(args, work, created)
        print_scaling(doc["scaling"])
    doc["verdicts"] = print_targets(runs, ref_runs, same, original, agree)
    print("  (timings on a shared machine are noisy; peak RSS is the max over runs)")


def _describe_cache(args, work, doc):
    """Reuse or generate the full-size cache; print and record what it holds."""
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
    return size


def _report_runs(args, work, doc, size, cold, runs, ref_runs):
    """Print the cold run, this checkout's runs and the side-by-side with the reference;
    returns the agreement of the numbers (None without a reference)."""
    sidecar_bytes = sum(p.stat().st_size for p in (work / "sidecars").glob("*"))
    doc.update({"cold_run": cold, "runs": runs, "reference_runs": ref_runs,
                "sidecar_bytes": sidecar_bytes})
    print(f"\nCold run (dense files converted, sparse sidecars written: "
          f"{sidecar_bytes / GB:.3f} GB on disk for {size['bytes'] / GB:.2f} GB dense): "
          f"{cold['wall_s']:.2f} s, load {cold['timings'].get('load', 0):.2f} s")
    print_runs(runs, "This checkout (sidecars warm)")
    if not ref_runs:
        return None
    print_runs(ref_runs, f"Reference {args.compare_ref}")
    print(f"\nSide by side ({len(runs)} alternating pairs; load average now "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()) + ")")
    print(compare.side_by_side(runs, ref_runs, gb, table_text))
    same = compare.results_agreement(runs[0]["results"], ref_runs[0]["results"])
    doc["reference_agreement"] = same
    print(f"  numbers: {same['steps']} step records compared on "
          f"{', '.join(compare.COMPARED)}: "
          + ("identical" if same["identical"] else
             f"{len(same['differences'])} differences, largest {same['max_abs_diff']:.2e}"
             f" ({same['differences'][:4]})"))
    return same


def _original(args, work, doc, runs):
    """The emulated original scripts: their time against ours and the agreement of numbers."""
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
    return original, agree


def _scaling(args, work, created):
    """One run per cell of samples x features; the cells' measurements."""
    scales = QUICK_SCALES if args.quick else SCALES
    feats = QUICK_FEATURES if args.quick else FEATURES
    print(f"\n  scaling: {len(scales) * len(feats)} cells"
          f"{' (--quick: largest cells skipped)' if args.quick else ''}", flush=True)
    wide = [_scaling_cell(args, work, created, sc, nf, sparse=True) for sc, nf in WIDE_CELLS]
    return [_scaling_cell(args, work, created, scale, nf)
            for scale in scales for nf in feats] + (wide if args.wide else [])


def _scaling_cell(args, work, created, scale, nf, sparse=False):
    """One scaling cell: its cache (reused when it is the full-size one) and one run."""
    default = (scale == DEMO_SCALE and nf == DEMO_FEATURES and not sparse
               and cache_matches(args.cache_dir, DEMO_SEED, DEMO_SCALE, DEMO_FEATURES))
    cache = (args.cache_dir if default
             else work / f"cache_s{scale:g}_f{nf}{'_sparse' if sparse else ''}")
    if not default:
        created.append(cache)
    g = ensure_cache(cache, DEMO_SEED, scale, nf, work, scratch=not default, sparse=sparse)
    sz = cache_size(cache)
    results = work / f"results_s{scale:g}_f{nf}"
    created.append(results)
    print(f"  cell {scale:g}x / {nf}: {sz['rows']} rows, {sz['nnz'] / 1e6:.0f} M nnz ...",
          end="", flush=True)
    r = run_sweep(cache, results, args.jobs, work, f"s{scale:g}_f{nf}",
                  extra=["--sidecar-dir", str(work / "sidecars")])
    print(f" {r['wall_s']:.1f} s, peak RSS {gb(r['peak_rss_bytes'])} GB", flush=True)
    if not args.keep:
        shutil.rmtree(results, ignore_errors=True)
        if not default:
            shutil.rmtree(cache, ignore_errors=True)
    return {"scale": scale, "features": nf, "sparse": sparse, **sz, **r,
            "gen_wall_s": g.get("gen_wall_s"),
            "gen_peak_rss_bytes": g.get("gen_peak_rss_bytes")}


def _clean_up(work, created, made_work_dir):
    """Remove what the benchmark made (unless --keep)."""
    for path in created:
        shutil.rmtree(path, ignore_errors=True)
    for f in list(work.glob("run_*.json")) + list(work.glob("generate_*.json")) \
            + list(work.glob("original_*.json")) + list(work.glob("*.log")):
        f.unlink(missing_ok=True)
    if made_work_dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
