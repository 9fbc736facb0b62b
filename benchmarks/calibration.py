"""Calibrate the verdict where the truth is known: false-claim rate under two nulls, power on
the planted demo, the answer (data / method / both / neither / inconclusive) on caches whose
cause is planted; and (--coverage) the simulated coverage of the intervals.

    python benchmarks/calibration.py                    # every scenario, 30 seeds (slow)
    python benchmarks/calibration.py --seeds 10 --jobs 2
    python benchmarks/calibration.py --scenarios "truth method/scale" "truth method/spurious" \
        "truth data" "null clean" "null source" --seeds 10     # the answer's table
    python benchmarks/calibration.py --coverage         # interval coverage tables only

Scenarios (demo_data.py with --n-features 2048; demo seed and sweep seed both = i for run i):
  planted        the default demo at quarter size (--scale 0.25): the benchmark's AF signal is
                 learnable from its own rows
  planted full   the same at full size (--scale 1.0: gold_106 has 51 + 55 rows), --full-seeds
  null clean     --null clean, quarter size: no OOD set carries any AF signal, one shared OOD
                 distribution
  null source    --null source, quarter size: no AF signal, each OOD source keeps its own
                 features (the all-AF sets differ from the benchmark's negatives by source alone)
  moderate loss  --conflict 0.5, quarter size: step 3 loses ~0.02-0.06 in-distribution, around
                 and beyond the tolerance (where a compressed out-of-fold change could mislead)
  trade-off      --conflict 2, quarter size: step 3 loses ~0.08-0.18 (a real trade-off)
  truth method/scale, truth method/spurious, truth data
                 demo_data.py --truth method --mechanism scale|spurious, --truth data, quarter
                 size (sweeplib/demo_truth.py): the cause of the OOD failure is planted
The truth scenarios and both nulls run as a user runs run_all.py (the default method arms, the
cache with --mean-pooled files, report and verdict.json); the planted ones run the sweep alone.
A claim is the verdict claiming an OOD improvement (verdict.json claims_ood_improvement); a
decisive verdict is diversity_helps or trade_off (the planted truth is diversity_helps).
Targets: false claims <= 5 % under both nulls, power >= 80 % on the planted demo.
The answer (verdict.json "answer"): a method claim is "method" or "both", a data claim "data"
or "both". Targets: a method claim in >= 80 % of the method truths' runs (diverse data fix those
caches too, so the full answer there is "both"); "data" in >= 80 % of the data truth's; a method
claim in <= 5 % of the runs on the data truth and both nulls; a data claim in <= 5 % under the
nulls.
Every scenario but the truth ones also writes FRESH_ROWS fresh rows of gold_106's distribution
beside its cache (demo_data.py --fresh) and scores them with the first and last step's portable
probes: the true in-distribution change its holds / drops call is checked against (targets:
decisive on >= 80 % of clear cases, true change >= CLEAR from -tolerance; wrong calls <= 5 %;
and a decisive verdict in >= 80 % of the planted seeds).
Prints counts with Clopper-Pearson 95 % intervals; exit 0 unless a run failed.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sweeplib import intervals  # noqa: E402
from sweeplib import config

SCENARIOS = {"planted": (None, None), "planted full": (None, 1.0),   # (null mode, scale, truth)
             "moderate loss": (None, None), "trade-off": (None, None),
             "null clean": ("clean", None), "null source": ("source", None),
             "truth method/scale": (None, None, ("method", "scale")),
             "truth method/spurious": (None, None, ("method", "spurious")),
             "truth data": (None, None, ("data", None))}
CONFLICT = {"moderate loss": 0.5, "trade-off": 2.0}           # demo_data.py --conflict
CLEAR = 0.01               # a clear case: the true change at least this far from -tolerance
FRESH_ROWS = 10000         # fresh rows of gold_106's distribution per run (the truth)
TARGETS = {"planted": ("power", ">=", 0.80), "planted full": ("power", ">=", 0.80),
           "moderate loss": ("power", ">=", 0.80), "trade-off": ("power", ">=", 0.80),
           "null clean": ("false claims", "<=", 0.05),
           "null source": ("false claims", "<=", 0.05)}
DECISIVE = ("diversity_helps", "trade_off")
ANSWERS = ("data", "method", "both", "neither", "inconclusive")
METHOD_CLAIMS, DATA_CLAIMS = ("method", "both"), ("data", "both")
# scenario -> [(what is counted, answers that count, op, target)]
ANSWER_TARGETS = {
    "truth method/scale": [("method claims", METHOD_CLAIMS, ">=", 0.80)],
    "truth method/spurious": [("method claims", METHOD_CLAIMS, ">=", 0.80)],
    "truth data": [("answer data", ("data",), ">=", 0.80),
                   ("method claims", METHOD_CLAIMS, "<=", 0.05)],
    "null clean": [("method claims", METHOD_CLAIMS, "<=", 0.05),
                   ("data claims", DATA_CLAIMS, "<=", 0.05)],
    "null source": [("method claims", METHOD_CLAIMS, "<=", 0.05),
                    ("data claims", DATA_CLAIMS, "<=", 0.05)],
}


def one_run(scenario, seed, work, scale, n_features):
    """Generate one demo cache, run the sweep and the analysis; return what the verdict said."""
    from sweeplib import analysis
    import common
    from sweeplib import demo, demo_fresh
    from sweeplib import pipeline
    from sweeplib.demo_truth import Variant
    from sweeplib import results_io
    cache = Path(work) / scenario.replace(" ", "_").replace("/", "_") / f"cache_{seed}"
    out = Path(work) / scenario.replace(" ", "_").replace("/", "_") / f"results_{seed}"
    t0 = time.perf_counter()
    null, own_scale, *truth = SCENARIOS[scenario]
    answered = scenario in ANSWER_TARGETS       # with the method arms (mean-pooled files too)
    variant = Variant(*(truth[0] if truth else (None, None)), mean_pooled=True) if answered else None
    demo.generate(cache, seed=seed, scale=own_scale or scale, n_features=n_features,
                  verbose=False, null=null, variant=variant, conflict=CONFLICT.get(scenario, 0.0))
    if not truth:                               # the truth caches have another layout
        demo_fresh.generate(cache, FRESH_ROWS, seed=seed, n_features=n_features, layers=[40],
                            null=null)
    argv = ["--cache-dir", str(cache), "--results-dir", str(out), "--seed", str(seed),
            "--jobs", "1", "--quiet"]
    if answered:                                # run_all.py as a user runs it: default arms
        import run_all
        if run_all.main(argv) != 0:
            raise RuntimeError(f"run_all.py failed: {scenario}, seed {seed}")
    else:
        args = config.build_parser("calibration").parse_args(argv)
        with results_io.session():              # the tool's own write protocol (lock, switch)
            results_io.claim(out)
            pipeline.run_sweep(config.RunConfig.from_args(args), [s.number for s in common.STEPS])
            results_io.commit_all()
    a = analysis.analyze(out, controls=answered)
    v = a.verdict
    ood = {n: s for n, s in a.sets.items() if s["role"] in ("OOD", "extra")}
    step_calls = any(d[s["headline"]]["verdict"] != "no clear change"
                     for s in ood.values() if s["kind"] == "two-class"
                     for d in s["deltas"].values() if s["headline"] in d)
    inflection = any(s["inflection"] is not None for s in ood.values()
                     if s["kind"] == "two-class")
    confounded_calls = any(d[s["headline"]]["verdict"] == "improved"
                           for s in ood.values() if s["kind"] == "single-class"
                           for d in s["deltas"].values() if s["headline"] in d)
    bench = next((t for t in v["ood_tests"] if t["set"] == "benchmark"), None)
    truth = None if truth else true_change(cache, a)
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(demo_fresh.fresh_dir(cache), ignore_errors=True)
    return {"scenario": scenario, "seed": seed, "outcome": v["outcome"], "answer": answer_of(v),
            "claims": bool(v["claims_ood_improvement"]), "step_calls": step_calls,
            "inflection": inflection, "confounded_calls": confounded_calls,
            "benchmark_delta": bench and bench["delta"], "benchmark_ci": bench and bench["ci"],
            **in_distribution_fields(v["in_distribution"], truth),
            "failed_premises": [p["name"] for p in v["premises"] if not p["passed"]],
            "seconds": time.perf_counter() - t0}


def answer_of(verdict):
    """The verdict's answer word, or None when this version of the tool gives none."""
    answer = verdict.get("answer")
    return answer.get("answer") if isinstance(answer, dict) else answer


def true_change(cache, a):
    """The first -> last change of the final probes' AUROC on the cache's fresh sample (their
    population change, up to ~0.002), scored with the portable probes of the scores files."""
    from sklearn.metrics import roc_auc_score
    from sweeplib import demo_fresh
    X, y = demo_fresh.load(cache)
    auc = [roc_auc_score(y, demo_fresh.probe_scores(a.scores[k]["_probe"], X))
           for k in (a.steps[0], a.steps[-1])]
    return float(auc[1] - auc[0])


def in_distribution_fields(g, truth):
    """The in-distribution part of a run's record: the call and the fresh-sample truth."""
    return {"gold": g and {k: g.get(k) for k in (
                "value_from", "value_to", "delta", "one_sided_lower", "one_sided_upper",
                "decision_delta", "basis", "tolerance")},
            "in_call": None if g is None else "holds" if g["holds"] else "drops" if g["drops"]
            else "cannot tell", "true_change": truth}


def wrong(r):
    """The in-distribution call contradicts the truth."""
    tol = r["gold"]["tolerance"] if r["gold"] else None
    return bool(r["in_call"] == "holds" and r["true_change"] <= -tol
                or r["in_call"] == "drops" and r["true_change"] >= -tol)


def truth_table(runs):
    """Per scenario: the in-distribution calls against the fresh-sample truth."""
    print(f"\n{'scenario':<13} {'true change: median [min, max]':<31} {'decisive on clear cases':<33}"
          f" {'wrong calls':<31} in-distribution calls")
    for scenario in SCENARIOS:
        rs = [r for r in runs if r["scenario"] == scenario and r["in_call"] is not None
              and r["true_change"] is not None]
        if not rs:
            continue
        t = np.array([r["true_change"] for r in rs])
        clear = [r for r in rs if abs(r["true_change"] + r["gold"]["tolerance"]) >= CLEAR]
        dec = sum(r["in_call"] != "cannot tell" for r in clear)
        calls = {c: sum(r["in_call"] == c for r in rs) for c in ("holds", "drops", "cannot tell")}
        print(f"{scenario:<13} {np.median(t):+.4f} [{t.min():+.4f}, {t.max():+.4f}]      "
              f"{_rate(dec, len(clear)) if clear else 'no clear case':<33} "
              f"{_rate(sum(wrong(r) for r in rs), len(rs)):<31} "
              + ", ".join(f"{c} {n}" for c, n in calls.items() if n))
    rs = [r for r in runs if r["in_call"] is not None and r["true_change"] is not None]
    clear = [r for r in rs if abs(r["true_change"] + r["gold"]["tolerance"]) >= CLEAR]
    print(f"{'all':<13} {'':<31} "
          f"{_rate(sum(r['in_call'] != 'cannot tell' for r in clear), len(clear)):<33} "
          f"{_rate(sum(wrong(r) for r in rs), len(rs)):<31}")
    bad = [r for r in runs if r["outcome"] in DECISIVE and r["true_change"] is not None
           and (r["outcome"] == "diversity_helps") != (r["true_change"] > -r["gold"]["tolerance"])]
    n_dec = sum(r["outcome"] in DECISIVE and r["true_change"] is not None for r in runs)
    print(f"decisive verdicts (diversity_helps / trade_off) whose in-distribution half the "
          f"fresh sample contradicts: {len(bad)}/{n_dec}")


def _rate(k, n):
    """'3/30 = 10.0 % [2.1, 26.5]' with a Clopper-Pearson interval."""
    lo, hi = intervals.proportion_interval(k, n)
    return f"{k}/{n} = {k / n:5.1%} [{lo:.1%}, {hi:.1%}]"


def report(runs):
    """The calibration table and the target lines; returns True when every target is met."""
    ok = True
    w = max([13] + [len(r["scenario"]) for r in runs])
    print(f"{'scenario':<{w}} {'claims an OOD improvement':<31} {'decisive':<9} "
          f"{'step call':<10} {'inflection':<11} outcomes")
    for scenario in SCENARIOS:
        rs = [r for r in runs if r["scenario"] == scenario]
        if not rs:
            continue
        n = len(rs)
        k = sum(r["claims"] for r in rs)
        outcomes = {o: sum(r["outcome"] == o for r in rs) for o in
                    ("diversity_helps", "trade_off", "no_improvement", "inconclusive")}
        decisive = sum(r["outcome"] in DECISIVE for r in rs)
        print(f"{scenario:<{w}} {_rate(k, n):<31} {decisive:>3}/{n:<5} "
              f"{sum(r['step_calls'] for r in rs):>3}/{n:<6} "
              f"{sum(r['inflection'] for r in rs):>3}/{n:<7} "
              + ", ".join(f"{o} {c}" for o, c in outcomes.items() if c))
    print()
    for scenario, (what, op, target) in TARGETS.items():
        rs = [r for r in runs if r["scenario"] == scenario]
        if not rs:
            continue
        rates = [(what, sum(r["claims"] for r in rs) / len(rs))]
        if op == ">=":
            rates.append(("decisive verdict",
                          sum(r["outcome"] in DECISIVE for r in rs) / len(rs)))
        for name, rate in rates:
            met = rate >= target if op == ">=" else rate <= target
            ok &= met
            print(f"{scenario:<{w}} {name} {rate:.1%} (target {op} {target:.0%}): "
                  f"{'PASS' if met else 'FAIL'}")
    nulls = [r for r in runs if r["scenario"].startswith("null")]
    if nulls:
        print(f"both nulls pooled: false claims {_rate(sum(r['claims'] for r in nulls), len(nulls))}"
              "; the upper end of the interval is what the runs can rule out")
    conf = sum(r["confounded_calls"] for r in nulls)
    n_null = len(nulls)
    print(f"\nunder the nulls, an all-AF set's AUROC vs reference negatives 'improves' (source "
          f"identity) in {conf}/{n_null} runs; the verdict never uses those sets")
    return ok


def answer_report(runs):
    """The answer's distribution per scenario and its target lines; True when every target
    is met."""
    if all(r["answer"] is None for r in runs):
        print('\nthe verdict gives no "answer" (this version of the tool has no method arms): '
              "the answer's targets are not checked")
        return True
    print(f"\n{'scenario':<22} {'n':>3} " + " ".join(f"{a:>12}" for a in ANSWERS)
          + f" {'method claims':<31} data claims")
    for scenario in SCENARIOS:
        rs = [r for r in runs if r["scenario"] == scenario]
        if not rs:
            continue
        n = len(rs)
        counts = " ".join(f"{sum(r['answer'] == a for r in rs):>12}" for a in ANSWERS)
        method = _rate(sum(r["answer"] in METHOD_CLAIMS for r in rs), n)
        data = _rate(sum(r["answer"] in DATA_CLAIMS for r in rs), n)
        print(f"{scenario:<22} {n:>3} {counts} {method:<31} {data}")
    ok = True
    print()
    for scenario, targets in ANSWER_TARGETS.items():
        rs = [r for r in runs if r["scenario"] == scenario]
        for what, words, op, target in targets if rs else ():
            k = sum(r["answer"] in words for r in rs)
            met = k / len(rs) >= target if op == ">=" else k / len(rs) <= target
            ok &= met
            print(f"{scenario:<22} {what:<14} {_rate(k, len(rs)):<31} (target {op} {target:.0%}): "
                  f"{'PASS' if met else 'FAIL'}")
    return ok


def coverage_table(reps=4000, seed=11):
    """Simulated coverage of the AUROC interval and of paired AUROC changes (binormal scores)."""
    from scipy.stats import norm
    rng = np.random.default_rng(seed)
    print(f"AUROC interval, coverage of the true AUROC ({reps} samples per cell)")
    print(f"{'pos sd':>6} {'neg sd':>6} {'n pos':>5} {'n neg':>5}  "
          + "  ".join(f"{a:>5}" for a in (0.5, 0.7, 0.85, 0.95, 0.99)))
    worst = {}
    for sp, sn in ((1, 1), (3, 1), (1, 3)):
        for m, n in ((3, 3), (5, 5), (10, 10), (10, 40), (40, 10), (51, 55), (104, 362)):
            row = []
            for auc in (0.5, 0.7, 0.85, 0.95, 0.99):
                d = np.hypot(sp, sn) * norm.ppf(auc)
                pos, neg = rng.normal(d, sp, (reps, m)), rng.normal(0, sn, (reps, n))
                v10, v01 = intervals.placements(pos, neg)
                lo, hi = intervals.auroc_interval_from(
                    v10.mean(-1), intervals._placement_var(v10), intervals._placement_var(v01),
                    m, n)
                c = float(np.mean((lo <= auc) & (auc <= hi)))
                row.append(c)
                worst[(sp == sn, m, n)] = min(worst.get((sp == sn, m, n), 1.0), c)
            print(f"{sp:>6} {sn:>6} {m:>5} {n:>5}  " + "  ".join(f"{c:.3f}" for c in row))
    print("\npaired AUROC change (two probes on the same rows), coverage of the true change")
    pairs = ((0.5, 0.5), (0.7, 0.8), (0.95, 0.95), (0.6, 0.9), (0.99, 0.97), (0.98, 0.975))
    print(f"{'n pos':>5} {'n neg':>5} {'rho':>4}  " + "  ".join(f"{a}->{b}" for a, b in pairs))
    for m, n in ((5, 5), (10, 10), (10, 40), (51, 55), (104, 362)):
        for rho in (0.0, 0.5, 0.9):
            row = [np.mean(_covers(*paired_change_bounds(rng, m, n, rho, aa, ab, reps, 0.95), ab - aa))
                   for aa, ab in pairs]
            print(f"{m:>5} {n:>5} {rho:>4}  "
                  + "  ".join(f"{c:>{len(f'{a}->{b}')}.3f}" for c, (a, b) in zip(row, pairs)))
    print("\nnon-inferiority near the ceiling (51 + 55, gold_106's size): true drop exactly "
          "0.02;\nshare of samples whose one-sided 95 % lower bound lies above it (nominal 0.05), "
          "and P(holds within 0.02) when the truth is no change")
    print(f"{'rho':>4}  " + "  ".join(f"{a}->{b}" for a, b in ((0.99, 0.97), (0.97, 0.95),
                                                             (0.95, 0.93), (0.9, 0.88)))
          + "   holds: 0.97->0.97  0.99->0.99")
    for rho in (0.0, 0.5, 0.8, 0.95, 0.99):
        tails = [np.mean(paired_change_bounds(rng, 51, 55, rho, aa, ab, reps, 0.90)[0] > ab - aa)
                 for aa, ab in ((0.99, 0.97), (0.97, 0.95), (0.95, 0.93), (0.9, 0.88))]
        holds = [np.mean(paired_change_bounds(rng, 51, 55, rho, a, a, reps, 0.90)[0] > -0.02)
                 for a in (0.97, 0.99)]
        print(f"{rho:>4}  " + "  ".join(f"{t:>10.3f}" for t in tails)
              + "   " + "  ".join(f"{h:>12.3f}" for h in holds))


def paired_change_bounds(rng, m, n, rho, auc_a, auc_b, reps, level):
    """(lo, hi) of the change of AUROC for reps pairs of probes scoring the same m + n rows,
    binormal, correlated rho through a per-row term."""
    from scipy.stats import norm
    y = np.r_[np.ones(m), np.zeros(n)].astype(bool)
    u = rng.normal(size=(reps, m + n))
    sa = (np.sqrt(2) * norm.ppf(auc_a) * y + np.sqrt(rho) * u
          + np.sqrt(1 - rho) * rng.normal(size=u.shape))
    sb = (np.sqrt(2) * norm.ppf(auc_b) * y + np.sqrt(rho) * u
          + np.sqrt(1 - rho) * rng.normal(size=u.shape))
    a10, a01 = intervals.placements(sa[:, y], sa[:, ~y])
    b10, b01 = intervals.placements(sb[:, y], sb[:, ~y])
    _, lo, hi, _ = intervals.change_from_placements(a10, a01, b10, b01, level=level)
    return lo, hi


def _covers(lo, hi, truth):
    """Per sample: the interval holds the truth."""
    return (lo <= truth) & (truth <= hi)


def main(argv=None):
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=30, help="runs per scenario (seeds 0..N-1)")
    p.add_argument("--full-seeds", type=int, default=10,
                   help="runs of the full-size planted scenario (slower)")
    p.add_argument("--scale", type=float, default=0.25, help="demo sample-count scale")
    p.add_argument("--n-features", type=int, default=2048, help="demo SAE width")
    p.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS),
                   metavar="NAME", help="subset of: " + ", ".join(SCENARIOS))
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    p.add_argument("--work-dir", type=Path, default=None, help="scratch folder (default: temp)")
    p.add_argument("--json", type=Path, default=None, help="also write every run as JSON")
    p.add_argument("--coverage", action="store_true", help="print the interval coverage table")
    args = p.parse_args(argv)
    if args.coverage:
        coverage_table()
        return 0
    import joblib
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="calibration-"))
    t0 = time.perf_counter()
    tasks = [(s, i) for s in args.scenarios
             for i in range(args.full_seeds if s == "planted full" else args.seeds)]
    print(f"{len(tasks)} runs ({', '.join(args.scenarios)}), demo scale {args.scale} (full "
          f"size: 1.0), {args.n_features} features, {args.jobs} process(es)", flush=True)
    runs = joblib.Parallel(n_jobs=args.jobs)(
        joblib.delayed(one_run)(s, i, work, args.scale, args.n_features) for s, i in tasks)
    print(f"done in {time.perf_counter() - t0:.0f} s (median run "
          f"{np.median([r['seconds'] for r in runs]):.1f} s)\n")
    ok = report(runs)
    truth_table(runs)
    ok &= answer_report(runs)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1) + "\n")
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    print("\n" + ("all targets met" if ok else "a target is missed (see above)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
