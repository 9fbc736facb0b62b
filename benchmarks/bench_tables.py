"""The benchmark's tables: end-to-end and per-phase runs, scaling, agreement with the original
scripts' dense fits, and the targets. Used by bench_sweep.py.
"""
from __future__ import annotations

import statistics

import compare

GB = 1e9
TARGET_SPEEDUP = 2.0                    # reference revision's median wall / ours
TARGET_ORIGINAL = 5.0                   # original scripts' wall / ours
TARGET_RSS_GB = 0.55                    # main process peak RSS
TARGET_AUROC_DIFF = 0.005


def spread(values):
    """{median, min, max} of a list of numbers."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


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
        rows.append([f"{c['scale']:g}x", f"{c['features']}{' sparse' if c.get('sparse') else ''}",
                     str(c["rows"]),
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
