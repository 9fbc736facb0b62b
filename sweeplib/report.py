"""The report: every section of the comparison, built from one analysis (analysis.py) and laid
out by render.py as text, Markdown or CSV; also the console comparison.

    sections = build_sections(result)      # header, progression, sets, ..., verdict, solver
"""
from __future__ import annotations

import csv
import datetime
import io
import statistics
import sys
from pathlib import Path

import common
from sweeplib import analysis, answer, answer_view, indist, solver_check
from sweeplib.render import (Section, Table, fmt, fmt_delta, fmt_difference, printable,
                             render_text, step_label)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
def header_section(result):
    """Data source, layer, config, inputs, versions and date."""
    synthetic = result.data_source == "demo"
    src = ("SYNTHETIC DEMO DATA (numbers show the tool's behaviour, not findings)" if synthetic
           else f"real cache {printable(result.config['cache_dir'])}")
    cfg = result.config
    lines = [
        f"data source : {src}",
        f"layer       : {result.layer}",
        f"probe       : StandardScaler + LogisticRegression, C={cfg['C']}, "
        f"penalty={cfg['penalty']}, max_iter={cfg['max_iter']}",
        f"split / cv  : eval fraction {cfg['eval_fraction']}, {cfg['cv_folds']}-fold CV, "
        f"seed {cfg['seed']}, repeats {cfg.get('repeats', 1)}, dedup split "
        f"{cfg.get('dedup_split', False)}",
        f"features    : {'all' if not cfg.get('feature_ids') else len(cfg['feature_ids'])}"
        + (f" (from {printable(cfg['feature_ids_file'])})" if cfg.get("feature_ids_file") else ""),
        "intervals   : 95 %; proportions Clopper-Pearson, AUROC score-type (DeLong variance "
        "shrunk to Hanley-McNeil), changes paired (DeLong correlation / Agresti-Min)",
        f"run id(s)   : {', '.join(result.run_ids)}",
        f"steps       : {', '.join(map(str, result.steps))}"
        + (f"  (not run: {', '.join(map(str, result.missing))})" if result.missing else ""),
        "versions    : " + ", ".join(f"{k} {v}" for k, v in result.versions.items()),
        f"written     : {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
    ]
    inputs = Table(["input file", "bytes", "fingerprint"], [
        [Path(p).name, str(f["bytes"]), next((f"{k}:{v[:16]}" for k, v in f.items()
                                                if k.startswith("sha256")), "")]
        for p, f in result.inputs.items()], right={1})
    warnings = data_warnings_block(result)
    return Section("Run", ["\n".join(lines)] + ([warnings] if warnings else []) + [inputs])


def data_warnings_block(result):
    """The data warnings recorded with the steps (datacheck.py), once each; None when none."""
    seen = list(dict.fromkeys(w for k in result.steps
                              for w in result.records[k].get("data_warnings") or []))
    if not seen:
        return None
    return "DATA WARNINGS (check before trusting the numbers):\n" + "\n".join(
        f"- {printable(w)}" for w in seen)


SOURCE_SHORT = {"train": "train", "sycophant": "syco", "model_organism": "organism",
                "benchmark": "bench"}


def progression_section(result):
    """Training mix per step: rows per source, CV AUROC, convergence."""
    sources = list(dict.fromkeys(s for p in result.progression for s in p["breakdown"]))
    rows = []
    for p in result.progression:
        rows.append([step_label(result, p["step"]), str(p["n"]), str(p["af"])]
                    + [str(p["breakdown"][s]["n"]) if s in p["breakdown"] else "-" for s in sources]
                    + [f"{p['cv_mean']:.3f} +- {p['cv_std']:.3f}", f"{p['train_accuracy']:.3f}",
                       _stopped(result, p)])
    for k in result.missing:
        if k in common.STEP_BY_NUMBER:
            rows.append([f"{k} {common.STEP_BY_NUMBER[k].slug}", "not run"]
                        + [""] * (len(sources) + 4))
    n_src = len(sources)
    return Section("Training progression", [Table(
        ["step", "n", "AF"] + [SOURCE_SHORT.get(s, s) for s in sources]
        + ["CV AUROC", "train acc", "stopped by"], rows, right=set(range(1, 3 + n_src + 2))),
        f"CV AUROC: mean +- sd over the {result.config.get('cv_folds')} CV folds. "
        "stopped by: 'tol' = the tolerance (converged), with a guaranteed bound on how far above "
        "its optimum the final fit stopped (see Solver); 'NOT converged' = the iteration cap or "
        "the line search."])


def _stopped(result, p):
    """'tol (<= 174 % above the optimum)' or 'NOT converged' for a progression row."""
    if not p["converged"]:
        return "NOT converged"
    bound = solver_check.excess_bound(result.records[p["step"]].get("solver", {}).get("final", {}))
    return "tol" if bound is None else f"tol, <= {bound:.0%}"




def set_sections(result, n_metrics=2):
    """One section per eval set: its metrics per step with CIs and paired deltas."""
    out = []
    for name, s in result.sets.items():
        blocks = []
        if s["kind"] == "single-class":
            only = "all-AF" if s["rows"] and any(r.get("af") for r in s["rows"].values())\
                else "single-class"
            head = common.METRIC_LABELS.get(s["headline"], "none defined")
            blocks.append(f"{only} set: AUROC undefined. Headline: {head}"
                          + (f" (this set's AF vs the held-out negatives of {s['reference']})"
                             if s["reference"] else "") + "."
                          + (f" CONFOUNDED BY SOURCE from step {s['confounded_from']}: once its "
                             "source (or the reference's) is in the training mix this compares "
                             "sources, not intent; the verdict does not use it."
                             if s.get("confounded_from") is not None else ""))
        metrics = s["metrics"][:n_metrics]
        headers = ["step", "n"] + [common.SHORT_METRIC_LABELS[m] for m in metrics] +\
            [f"change in {common.SHORT_METRIC_LABELS.get(s['headline'], 'headline')}"]
        rows = []
        for k, row in sorted(s["rows"].items()):
            rows.append([str(k), str(row["n"])]
                        + [fmt(row[m]["value"], row[m]["ci"]) if m in row else "n/a"
                           for m in metrics]
                        + [fmt_delta(s["deltas"].get(k, {}).get(s["headline"]))])
        blocks.append(Table(headers, rows, right={1}))
        if s["deltas"]:
            blocks.append(f"change: paired 95 % interval per comparison; the call (improved / "
                          f"degraded / ns = no clear change) by the Holm-adjusted p (p_adj) "
                          f"over the {result.n_step_comparisons} step-to-step comparisons of "
                          "all sets' headline metrics, so an interval that excludes 0 can "
                          "still be 'ns (Holm)'.")
        if s["kind"] == "two-class" and any("eval_fpr_5" in r for r in s["rows"].values()):
            blocks.append("false-positive rate on this set's own negatives at the 5 % train-FPR "
                          "threshold: " + ", ".join(
                              f"step {k}: {fmt(r['eval_fpr_5']['value'], pct=True)}"
                              for k, r in sorted(s["rows"].items()) if "eval_fpr_5" in r))
        out.append(Section(f"{s['role']}: {s['title']}", blocks))
    return out


def per_class_section(result):
    """Benchmark per fine class: fraction flagged at 0.5 and at the 5 % threshold."""
    pc = result.per_class
    if not pc:
        return None
    steps = sorted(pc)
    classes = list(dict.fromkeys(c for k in steps for c in pc[k]))
    rows = []
    for c in classes:
        n = next(pc[k][c]["n"] for k in steps if c in pc[k])
        rows.append([c, str(n)] + [
            f"{pc[k][c]['flagged_at_0.5']:.0%} / {pc[k][c].get('flagged_at_fpr_5', 0):.0%}"
            if c in pc[k] else "n/a" for k in steps])
    return Section("Benchmark per class (flagged at 0.5 / at the 5 % train-FPR threshold)", [
        Table(["class", "n"] + [f"step {k}" for k in steps], rows,
              right=set(range(1, len(steps) + 2))),
        "hard_negative and compliant_hard_negative share vocabulary with AF but not intent: "
        "their flagged share is the false-positive rate researchers look at."])


def inflection_section(result):
    """Per eval set, the step with the largest significant gain."""
    rows = [[name + ("*" if s.get("confounded_from") is not None else ""),
             common.METRIC_LABELS.get(s["headline"], "?"),
             "none" if s["inflection"] is None else str(s["inflection"]),
             fmt_delta(s["overall"]) if s["overall"] else ""]
            for name, s in result.sets.items()]
    blocks = [Table(["eval set", "metric", "inflection", "first -> last step"], rows),
              "Step-to-step calls are Holm-adjusted over all sets' headline comparisons; the "
              "inflection is the step with the largest adjusted-significant gain. First -> last: "
              "paired 95 % interval, per comparison (the verdict's own family is adjusted "
              "separately)."]
    if any(s.get("confounded_from") is not None for s in result.sets.values()):
        blocks.append("* confounded by source: an all-AF set ranked against another source's "
                      "negatives; from the step its source enters the mix, its changes measure "
                      "source identity, not intent.")
    return Section("Inflection points", blocks)


def gap_section(result):
    """Generalization gap per step."""
    if not result.gap:
        return None
    rows = [[step_label(result, k), fmt(g["in_distribution"]), fmt(g["ood_mean"]),
             fmt(g["gap"], g["ci"])] for k, g in sorted(result.gap.items())]
    sets = next(iter(result.gap.values()))["ood_sets"]
    return Section("Generalization gap", [
        Table(["step", "gold_106 AUROC", "mean OOD", "gap [95% CI]"], rows, right={1, 2}),
        "gap = gold_106 AUROC - mean AUROC of the OOD sets with both classes ("
        + ", ".join(sets) + "); all-AF sets are left out (their ranking metric compares "
          "sources). Interval: the sets are independent samples."])


def repeats_section(result):
    """Spread across repeated seeds."""
    if not result.repeats:
        return None
    rows = []
    for k, per in sorted(result.repeats.items()):
        for name, r in per.items():
            rows.append([step_label(result, k), name, common.METRIC_LABELS[r["metric"]],
                         f"{r['mean']:.3f} +- {r['sd']:.3f} (n={r['n']})",
                         "YES" if r["spread_exceeds_ci"] else "no"])
    return Section("Repeated seeds", [
        Table(["step", "eval set", "metric", "mean +- sd", "range > CI width"], rows),
        "mean +- sd across the n seeds (each seed changes the split, the folds and the model; "
        "sd 0.000: every seed gives the same value). When the range across seeds exceeds the "
        "interval width of one run, split and initialization noise dominates: trust the mean, "
        "not one run."])


def audit_section(result):
    """Exact and near duplicates between training parts and eval sets."""
    audit = result.audit
    if not audit:
        return None
    rows = [[p["train"], p["eval"], str(p["exact"]), str(p["near"]), str(p["n_eval"])]
            for p in audit["pairs"] if p["exact"] or p["near"]]
    within = [[n, str(w["exact"]), str(w["near"]), str(w["n"])]
              for n, w in audit["within"].items() if w["exact"] or w["near"]]
    blocks = []
    if rows:
        blocks += ["WARNING: eval rows with a (near) duplicate in a training part:",
                   Table(["training part", "eval set", "exact", f"near (cos >= {audit['threshold']})",
                          "eval n"], rows, right={2, 3, 4})]
    else:
        blocks.append("No exact or near duplicates between any training part and any eval set.")
    if within:
        blocks += ["Rows with a (near) duplicate inside the same dataset:",
                   Table(["dataset", "exact", "near", "n"], within, right={1, 2, 3})]
    return Section("Leakage audit", blocks)


def anatomy_section(result, n_top=5):
    """Probe anatomy: weights used, strongest features, feature overlap between steps."""
    an = result.anatomy or {}
    if not an:
        return None
    rows = []
    for k, v in sorted(an.items()):
        top = ", ".join(f"{t['id']}:{t['weight']:+.2f}" for t in v["top"][:n_top])
        jac = "" if v["jaccard_top100_prev"] is None else f"{v['jaccard_top100_prev']:.2f}"
        rows.append([str(k), f"{v['n_nonzero']}/{v['n_features']}", jac, top])
    return Section("Probe anatomy", [
        Table(["step", "non-zero w", "top-100 J", f"top {n_top} features (id:weight)"], rows,
              right={1, 2}),
        "top-100 J = Jaccard overlap of the 100 largest |weights| with the previous step: low "
        "values mean the probe switches to new features as the mix grows. Weights are in "
        "standardized units; the top 20 per step are in the step JSON (top_features)."])


def arm_sections(result):
    """Main sweep vs the fixed-budget arm and the format-only baseline."""
    out = []
    for folder, arm in (result.arms or {}).items():
        short = "budget" if folder == "arm_budget" else "format"
        rows = []
        for name, v in arm["sets"].items():
            d, first = v["main_minus_arm"], min(v["rows"]) if v["rows"] else None
            conf = result.sets.get(name, {}).get("confounded_from")
            for k, r in sorted(v["rows"].items()):
                short_metric = common.SHORT_METRIC_LABELS.get(v["metric"], v["metric"])
                rows.append([(name + ("*" if conf is not None else "")) if k == first else "",
                             short_metric if k == first else "",
                             str(k), fmt(r["main"]), fmt(r["arm"]),
                             fmt_difference(d, short) if d and d["step"] == k else ""])
        label = arm["label"] + (f" (N = {arm['budget_n']})" if arm.get("budget_n") else "")
        out.append(Section(f"Control: {label}", [
            Table(["eval set", "metric", "step", "sweep", short, "sweep - " + short], rows,
                  right={2, 3, 4}),
            f"Reading: {arm['conclusion']}. Differences are per comparison; * confounded by "
            "source (all-AF set), left out of the reading."]))
    return out


def orderings_section(result):
    """Where the largest significant gain falls for each order of adding the OOD sources."""
    orders = result.orderings or {}
    if not orders:
        return None
    sets = list(dict.fromkeys(n for o in orders.values() for n in o["sets"]))
    short = lambda src: SOURCE_SHORT.get(src, src)  # noqa: E731
    rows = [["-".join(short(x) for x in o["order"])]
            + [(f"{o['sets'][n]['inflection_step']} (+{short(o['sets'][n]['added_source'])})"
                if o["sets"].get(n, {}).get("added_source") else "none") for n in sets]
            for o in orders.values()]
    conf = [n for n in sets if result.sets.get(n, {}).get("kind") == "single-class"]
    return Section("Control: orderings of the OOD sources", [
        Table(["order (steps 1-2-3)"] + [n + ("*" if n in conf else "") for n in sets], rows),
        "Each cell: the step (and source added there) with the largest significant gain in that "
        "set's headline metric (Holm-adjusted within each ordering). If the benchmark's jump "
        "always comes with adding the benchmark, the finding does not depend on the order."
        + (" * all-AF set: its gain where its own source is added measures source identity "
           "(confounded by source)." if conf else "")])


def transfer_section(result):
    """Single-source and leave-one-out probes on every eval set."""
    doc = result.transfer
    if not doc:
        return None
    return Section("Control: transfer matrix", [
        transfer_table(doc),
        "Headline metric per eval set (AUROC; AUROC vs reference negatives for all-AF sets) "
        "with its 95 % interval and n, the eval set's rows. Single all-AF sources cannot "
        "train a probe on their own (n/a)."])


def transfer_table(doc):
    """The transfer matrix, one row per training mix and eval set (the console's and the
    report's): headline metric, value with its interval (files of older runs: none), n."""
    rows = []
    for mix in doc["train_mixes"]:
        cell = doc["cells"].get(mix, {})
        for e in doc["eval_sets"]:
            c = cell.get(e) or {}
            rows.append([mix, e, common.SHORT_METRIC_LABELS.get(c.get("headline"), "")]
                        + (["n/a (no probe)", ""] if "note" in cell else
                           [fmt(c.get("value"), c.get("ci")), str(c.get("n", ""))]))
    return Table(["training mix", "eval set", "metric", "value [95% CI]", "n"], rows,
                 right={4})


def grid_section(result):
    """Summary of grid cells when a grid was run."""
    doc = result.grid
    if not doc or not doc.get("cells"):
        return None
    rows = [[str(r["layer"]), f"{r['C']:g}", r["penalty"], f"{r['cv_auroc']:.3f}",
             str(r["n_nonzero_weights"]), r["path"]] for r in doc["cells"]]
    return Section("Grid", [Table(["layer", "C", "penalty", "CV AUROC", "non-zero w", "folder"],
                                  rows, right={0, 1, 3, 4}),
                            "Each cell is a full sweep in its own folder (compare_all_steps.py "
                            "--results-dir <folder>)."])


def verdict_section(result):
    """Findings (premise checks first) and the verdict with its reasons and criteria."""
    v = result.verdict
    c = v["criteria"]
    used = ", ".join(v["sets_used"]) or "none"
    left = "; ".join(f"{x['set']} ({x['reason']})" for x in v["sets_excluded"]) or "none"
    criteria = (f"criteria: family-wise alpha {c['alpha']:.2f} (Holm over the OOD sets used, "
                f"first -> last step); in-distribution holds when the one-sided "
                f"{1 - c['alpha']:.0%} lower bound of its AUROC change (gold_106 with the train "
                f"rows' out-of-fold change) exceeds -{c['gold_tolerance']}; premises: base "
                f"gold_106 AUROC lower bound >= {c['min_base_auroc']}, >= {c['min_per_class']} "
                f"rows per class, < {c['max_duplicate_share']:.0%} of held-out rows duplicating "
                f"training rows, converged fits. Intervals and tests are conditional on seed "
                f"{v['conditional_on_seed']} (its split and fits).")
    return Section("Findings and verdict", answer_view.answer_blocks(result) + [
        "\n".join(f"- {f}" for f in result.findings),
        f"VERDICT: {v['outcome']} ({v['summary']})",
        "because:\n" + "\n".join(f"- {r}" for r in v["reasons"]),
        *filter(None, [indist.power_text(v)]),
        f"sets used: {used}; left out: {left}",
        criteria,
        "next steps:\n" + "\n".join(f"- {s}" for s in v["next_steps"])])


def solver_section(result):
    """How far each fit stopped from its optimum, and the --solver-check control (None without
    solver records)."""
    s = analysis.solver_summary(result)
    if not s["steps"]:
        return None
    max_iter = result.config.get("max_iter")
    rows = []
    for k, st in sorted(s["steps"].items()):
        f = st["final"]
        folds = result.records[k]["solver"]["cv_folds"]
        cv = [b for b in map(solver_check.excess_bound, folds) if b is not None]
        stalled = sum(not r.get("converged") for r in folds)
        rows.append([step_label(result, k), f"{f['n_iter']} / {max(st['cv_n_iter'], default=0)}",
                     solver_check.stop_label(f, max_iter)
                     + (f" (CV: {stalled} not converged)" if stalled else ""),
                     _num(f.get("objective")), _share(solver_check.excess_bound(f)),
                     _share(statistics.median(cv) if cv else None),
                     _num(f.get("max_abs_gradient"))])
    blocks = [Table(["step", "iter fit/CV", "stop (final fit)", "objective P",
                     "P/P*-1 at most", "CV: median", "max grad"], rows, right={1, 3, 4, 5, 6}),
              f"tol = {s['tol']:g}: L-BFGS stops when every gradient entry is <= tol "
              "(scikit-learn's default stopping rule, as in the original research). P = "
              "mean loss + L2 penalty at the stop, P* = its minimum at this C, D = a dual lower "
              "bound on P*. 'P/P*-1 at most' = gap / D with gap = P - D: a guaranteed bound on "
              "how far above the optimum the fit stopped, as a share of the optimum (the "
              "share --solver-check measures), loose by construction. A probe stopped far from "
              "its optimum is defined by the stopping point: check whether the findings "
              "survive with --solver-check.", solver_check.STOP_LEGEND + "."]
    c = s["check"]
    if c:
        blocks += _solver_check_blocks(result, c)
    return Section("Solver: how far each fit stopped from its optimum", blocks)


def _share(x):
    """A share as a percentage, or n/a."""
    return "n/a" if x is None else f"{x:.0%}"


def _solver_check_blocks(result, c):
    """Tables and text of the --solver-check comparison."""
    steps = sorted({k for v in c["sets"].values() for k in v["rows"]})
    rows, deltas = [], []
    for name, v in c["sets"].items():
        pairs = [v["rows"].get(k) for k in steps]
        moved = [abs(p[1] - p[0]) for p in pairs if p and None not in p]
        deltas += moved
        rows.append([name, common.SHORT_METRIC_LABELS.get(v["metric"], v["metric"])]
                    + ["n/a" if not p or None in p else f"{p[0]:.3f} / {p[1]:.3f}" for p in pairs]
                    + [f"{max(moved):.3f}" if moved else "n/a"])
    same = c["verdict"] == c["tight_verdict"]
    text = (f"Solver check ({solver_check.FOLDER}/): headline metric at tol "
            f"{result.config.get('tol', 1e-4):g} / at tol {c['tol']:g}; largest change "
            f"{max(deltas, default=0):.3f}. P/P*-1 measured (P* = the tight fit's objective; "
            "the table's bound in brackets): "
            + ", ".join(f"step {k}: {e:.0%} ({_share(_bound(result, k))})"
                        for k, e in sorted(c["excess"].items()))
            + f". Verdict at the default tolerance: {c['verdict']}; at tol {c['tol']:g}: "
            f"{c['tight_verdict']} ({'unchanged' if same else 'CHANGES'}).")
    if not c["tight_converged"]:
        text += (" WARNING: some tight fits stopped before converging (iteration cap or line "
                 "search; recorded as converged: false), so the tight objective may still be "
                 "above P* and the measured share understated.")
    return [Table(["eval set", "metric"] + [f"step {k}" for k in steps] + ["max change"],
                      rows, right=set(range(2, 3 + len(steps)))), text]


def _bound(result, k):
    """gap / D of step k's final fit, or None."""
    return solver_check.excess_bound(result.records[k].get("solver", {}).get("final", {}))


def _num(x):
    """A small positive number in 3 significant digits, or n/a."""
    return "n/a" if x is None else f"{x:.3g}"


def build_sections(result, header=True, n_metrics=2):
    """All sections in report order (None dropped): the answer, the run, then the details."""
    secs = [answer.answer_section(result)] + ([header_section(result)] if header else [])
    secs += [progression_section(result)] + set_sections(result, n_metrics) + [
        per_class_section(result), inflection_section(result), gap_section(result),
        repeats_section(result), anatomy_section(result)] + arm_sections(result) + [
        orderings_section(result), transfer_section(result), grid_section(result),
        audit_section(result), verdict_section(result)]
    secs.append(solver_section(result))      # does the verdict depend on where the solver stopped?
    return [s for s in secs if s is not None]


# --------------------------------------------------------------------------------------------
# Whole documents
# --------------------------------------------------------------------------------------------
CSV_FIELDS = ["step", "step_name", "eval_set", "metric", "value", "ci_low", "ci_high", "n"]


def render_csv(result):
    """One row per step x eval set x metric."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for name, s in result.sets.items():
        for k, row in sorted(s["rows"].items()):
            for m in s["metrics"]:
                if m in row:
                    ci = row[m]["ci"] or [None, None]
                    w.writerow([k, result.records[k]["name"], name, m, row[m]["value"],
                                ci[0], ci[1], row["n"]])
    return buf.getvalue()


def title_for(result):
    """Report title, marked when synthetic."""
    t = f"Distribution sweep - layer {result.layer}"
    return t + " - SYNTHETIC DEMO DATA" if result.data_source == "demo" else t


# --------------------------------------------------------------------------------------------
# The console comparison
# --------------------------------------------------------------------------------------------
def render_console(result, stream=None):
    """The comparison as console text: plain ASCII, colour only on a TTY (stream: stdout)."""
    stream = stream or sys.stdout
    text = render_text(build_sections(result, header=False), title_for(result))
    if result.data_source == "demo":
        text = "*** SYNTHETIC DEMO DATA: numbers show how the tool behaves, not real findings ***\n" + text
    if stream is not None and stream.isatty():
        for word, code in (("improved", "32"), ("degraded", "31"), ("VERDICT:", "1"),
                           ("ANSWER:", "1"),
                           ("WARNING:", "33")):
            text = text.replace(word, f"\033[{code}m{word}\033[0m")
    return text
