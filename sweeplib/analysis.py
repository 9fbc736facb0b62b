"""Compute once, format twice: the analysis behind compare_all_steps.py and generate_report.py.

`analyze(results_dir)` reads the step files, checks they belong together, recomputes every
metric, interval and paired step-to-step change from the saved per-sample scores (no
retraining; intervals.py), adjusts the step-to-step calls for multiplicity (Holm) and adds the
verdict (verdict.py). It returns one dict.
"""
from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

import common
from sweeplib import intervals
from sweeplib import results_read
from sweeplib import solver_check
from sweeplib import verdict
from sweeplib import base
from sweeplib import config
from sweeplib.metrics import set_estimates

# metrics compared across steps; the first defined one is a set's headline
TWO_CLASS_METRICS = ("auroc", "recall_at_fpr_5", "recall_at_fpr_1", "accuracy")
ONE_CLASS_METRICS = ("auroc_vs_reference_negatives", "detection_rate", "recall_at_fpr_5",
                     "recall_at_fpr_1")
METRIC_LABELS = common.METRIC_LABELS
ALPHA = intervals.ALPHA       # two-sided level of every call (improved / degraded)


STEP_FILE = results_read.STEP_FILE


def step_files(results_dir):
    """{step number: JSON path} of the step files in a folder (names of steps the tool has;
    results_read.step_records checks their contents)."""
    files, _ = results_read.scan(results_dir)
    return {k: paths[0] for k, paths in files.items()}


def load_results(results_dir, allow_mixed=False):
    """Step records and scores from a results folder, every step's files verified as one unit
    (results_read.load_folder); refuse files from mismatched runs."""
    results_dir = Path(results_dir)
    records, scores = results_read.load_folder(results_dir)
    if not records:
        raise base.InputError(f"{results_dir}: no step results found (run run_all.py first)")
    if not allow_mixed:
        _check_same_run(records, results_dir)
    missing = [k for k in common.STEP_BY_NUMBER if k not in records]
    return records, scores, missing


def _short(value, width=40):
    """repr of a value, cut to width characters."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def _check_same_run(records, results_dir):
    """Raise when steps differ in config, inputs or data source."""
    items = sorted(records.items())
    k0, r0 = items[0]
    for k, r in items[1:]:
        for field in ("data_source", "layer"):
            if r.get(field) != r0.get(field):
                raise base.InputError(f"{results_dir}: step {k} and step {k0} differ in "
                                        f"'{field}' ({r.get(field)!r} vs {r0.get(field)!r}); "
                                        "rerun or pass --allow-mixed")
        c0, c = config.comparable(r0["config"]), config.comparable(r["config"])
        for key in sorted(set(c0) | set(c)):
            if c0.get(key) != c.get(key):
                raise base.InputError(f"{results_dir}: step {k} and step {k0} differ in config "
                                        f"'{key}' ({_short(c.get(key))} vs {_short(c0.get(key))});"
                                        " rerun or pass --allow-mixed")
        ins0, ins = r0.get("inputs", {}), r.get("inputs", {})
        changed = sorted(p for p in set(ins0) | set(ins) if ins0.get(p) != ins.get(p))
        if changed:
            raise base.InputError(f"{results_dir}: step {k} and step {k0} were computed from "
                                    f"different input files ({changed[0]}); rerun or pass "
                                    "--allow-mixed")


def set_info(name):
    """(title, role) of an eval set, also for extra eval sets not in this process's table."""
    spec = common.DATASETS.get(name)
    if spec is None:
        return f"{name} (extra eval set)", "extra"
    role = {"scratchpad": "in-distribution", "ood": "OOD"}.get(spec.regime, "extra")
    return spec.title, role


def analyze(results_dir, allow_mixed=False, controls=True, criteria=None):
    """Everything the comparison and the report show, as one dict."""
    out, estimates = analyze_folder(results_dir, allow_mixed, criteria)
    if controls:
        out["arms"] = arm_comparisons(results_dir, out, estimates)
        out["orderings"] = orderings_summary(results_dir)
        out["transfer"] = transfer_summary(results_dir)
        out["grid"] = grid_summary(results_dir)
    return out


def _call(delta, p, alpha):
    """'improved' / 'degraded' when p < alpha (in the direction of delta), else no clear change."""
    if p is None or not np.isfinite(p) or p >= alpha or delta == 0:
        return "no clear change"
    return "improved" if delta > 0 else "degraded"


def confounded_from(name, steps, records):
    """First step whose training mix holds the source of an all-AF set or of its reference
    negatives (from there on its AUROC vs reference negatives measures source identity, not
    intent); None for sets with both classes or never confounded."""
    spec = common.DATASETS.get(name)
    sources = {name} | ({spec.reference} if spec and spec.reference else set())
    for k in steps:
        if sources & set(records[k].get("training_data", [])):
            return k
    return None


def _set_rows(name, present, records, scores, metrics):
    """Per step: value and interval of each metric, from the saved scores; and the estimates."""
    rows, ests = {}, {}
    for k in present:
        entry = records[k]["evaluation"][name]
        est = set_estimates(scores[k], name, entry.get("reference_negatives"),
                                  records[k]["thresholds"]["log_odds"])
        ests[k] = est
        rows[k] = {m: {"value": est[m].value, "ci": intervals.interval(est[m])}
                   for m in list(metrics) + ["eval_fpr_5", "eval_fpr_1"] if m in est}
        rows[k]["n"] = entry["n_samples"]
        rows[k]["af"] = entry["af_samples"]
    return rows, ests


def _paired(scores, k1, k2, name):
    """True when an eval set holds the same rows at two steps (then changes are paired)."""
    r1, r2 = scores[k1][name].get("row"), scores[k2][name].get("row")
    return r1 is not None and r2 is not None and np.array_equal(r1, r2)


def analyze_folder(results_dir, allow_mixed=False, criteria=None, conclude=True):
    """analyze() of one folder, plus the estimates {(step, set): {metric: Estimate}};
    conclude=False (control arms, orderings) skips the verdict and the findings."""
    records, scores, missing = load_results(results_dir, allow_mixed)
    steps = sorted(records)
    main_steps = [k for k in steps if k in common.STEP_BY_NUMBER]
    first = records[steps[0]]
    cfg = first["config"]
    out = {"results_dir": str(results_dir), "steps": steps, "missing": missing,
           "records": records, "scores": scores, "config": cfg,
           "data_source": first.get("data_source"), "demo": first.get("demo"),
           "layer": first.get("layer"), "inputs": first.get("inputs", {}),
           "versions": first.get("versions", {}),
           "run_ids": sorted({r.get("run_id") for r in records.values()})}
    out["progression"] = [{
        "step": k, "name": records[k]["name"], "n": records[k]["n_training_samples"],
        "af": records[k].get("n_training_af"), "breakdown": records[k]["training_breakdown"],
        "cv_mean": records[k]["cv_auroc_mean"], "cv_std": records[k]["cv_auroc_std"],
        "train_accuracy": records[k]["train_accuracy"], "converged": records[k]["converged"],
        "n_nonzero": records[k].get("n_nonzero_weights"), "n_iter": records[k].get("n_iter")}
        for k in steps]
    seen = list(dict.fromkeys(n for k in steps for n in records[k]["evaluation"]))
    set_names = [n for n in common.EVAL_SETS if n in seen] + [n for n in seen
                                                             if n not in common.EVAL_SETS]
    sets, estimates = {}, {}
    for name in set_names:
        present = [k for k in steps if name in records[k]["evaluation"]]
        entry0 = records[present[0]]["evaluation"][name]
        kind = "two-class" if entry0.get("auroc") is not None else "single-class"
        metrics = TWO_CLASS_METRICS if kind == "two-class" else ONE_CLASS_METRICS
        rows, ests = _set_rows(name, present, records, scores, metrics)
        metrics = [m for m in metrics if any(m in ests[k] for k in present)]
        for k in present:
            estimates[(k, name)] = ests[k]
        chain = [k for k in present if k in main_steps]
        deltas = {}
        for a, b in zip(chain, chain[1:]):
            deltas[b] = {m: dict(intervals.change(ests[a][m], ests[b][m],
                                                  paired=_paired(scores, a, b, name)),
                                 step_from=a)
                         for m in metrics if m in ests[a] and m in ests[b]}
            for m, d in deltas[b].items():
                d["verdict"] = _call(d["delta"], d["p_value"], ALPHA)
                d["calls"] = "per comparison"
        head = metrics[0] if metrics else None
        overall = None
        if head and len(chain) > 1 and head in ests[chain[0]] and head in ests[chain[-1]]:
            overall = dict(intervals.change(ests[chain[0]][head], ests[chain[-1]][head],
                                            paired=_paired(scores, chain[0], chain[-1], name)),
                           step_from=chain[0], step_to=chain[-1])
            overall["verdict"] = _call(overall["delta"], overall["p_value"], ALPHA)
        title, role = set_info(name)
        sets[name] = {"kind": kind, "title": title, "role": role, "metrics": metrics,
                      "headline": head, "rows": rows, "deltas": deltas, "inflection": None,
                      "overall": overall, "reference": entry0.get("reference_negatives"),
                      "auroc_note": entry0.get("auroc_note"),
                      "confounded_from": (confounded_from(name, main_steps, records)
                                          if kind == "single-class" else None)}
    out["n_step_comparisons"] = _adjust_step_calls(sets)
    out["sets"] = sets
    out["estimates"] = estimates
    out["gap"] = _gap(steps, sets, estimates)
    out["per_class"] = {k: records[k]["evaluation"]["benchmark"]["per_class"]
                        for k in steps if "benchmark" in records[k]["evaluation"]}
    out["repeats"] = _repeats(records, steps, sets)
    out["anatomy"] = anatomy(records, steps)
    out["audit"] = first.get("leakage_audit")
    out["verdict"] = verdict.decide(out, criteria or verdict.Criteria()) if conclude else None
    out["findings"] = verdict.findings(out) if conclude else []
    return out, estimates


def _adjust_step_calls(sets):
    """Holm-adjust the step-to-step calls on every set's headline metric as one family; the
    inflection of a set is its largest adjusted-significant gain. Returns the family size."""
    family = [(name, b) for name, s in sets.items() if s["headline"]
              for b, d in s["deltas"].items() if s["headline"] in d]
    adjusted = intervals.holm([sets[n]["deltas"][b][sets[n]["headline"]]["p_value"]
                               for n, b in family])
    for (name, b), p in zip(family, adjusted):
        d = sets[name]["deltas"][b][sets[name]["headline"]]
        d["p_adjusted"] = float(p)
        d["verdict"] = _call(d["delta"], p, ALPHA)
        d["calls"] = f"Holm over {len(family)}"
    for s in sets.values():
        gains = [(d[s["headline"]]["delta"], b) for b, d in s["deltas"].items()
                 if s["headline"] in d and d[s["headline"]]["verdict"] == "improved"]
        s["inflection"] = max(gains)[1] if gains else None
    return len(family)


# --------------------------------------------------------------------------------------------
# Controls: arms, orderings, transfer matrix, grid
# --------------------------------------------------------------------------------------------
ARMS = {"arm_budget": "fixed budget", "baseline_format": "format-only baseline"}


def arm_comparisons(results_dir, main, main_estimates):
    """Main sweep vs each control arm present: headline per step and the last-step paired
    difference (main - arm) on the same eval rows (per comparison, not multiplicity-adjusted)."""
    out = {}
    for folder, label in ARMS.items():
        path = Path(results_dir) / folder
        if not step_files(path):
            continue
        arm, arm_estimates = analyze_folder(path, conclude=False)
        per_set = {}
        for name, s in main["sets"].items():
            if name not in arm["sets"] or s["headline"] is None:
                continue
            m = s["headline"]
            common_steps = [k for k in main["steps"] if k in arm["sets"][name]["rows"]
                            and k in s["rows"] and k in common.STEP_BY_NUMBER]
            rows = {k: {"main": s["rows"][k].get(m, {}).get("value"),
                        "arm": arm["sets"][name]["rows"][k].get(m, {}).get("value")}
                    for k in common_steps}
            diff = None
            if common_steps:
                k = common_steps[-1]
                em, ea = main_estimates[(k, name)].get(m), arm_estimates[(k, name)].get(m)
                if em is not None and ea is not None:
                    r1, r2 = main["scores"][k][name].get("row"), arm["scores"][k][name].get("row")
                    diff = intervals.change(ea, em, paired=r1 is not None and r2 is not None
                                            and np.array_equal(r1, r2))
                    diff["verdict"] = _call(diff["delta"], diff["p_value"], ALPHA)
                    diff["step"] = k
            per_set[name] = {"metric": m, "role": s["role"], "kind": s["kind"], "rows": rows,
                             "main_minus_arm": diff, "arm_overall": arm["sets"][name]["overall"]}
        out[folder] = {"label": label, "sets": per_set, "records": arm["records"], "analysis": arm,
                       "budget_n": arm["config"].get("budget_n"),
                       "conclusion": arm_conclusion(folder, per_set)}
    return out


def arm_conclusion(folder, per_set):
    """Plain-language reading of an arm comparison on the OOD sets that measure intent (both
    classes from one source); per-comparison calls, absence of a difference is not proof."""
    ood = {n: v for n, v in per_set.items()
           if v["role"] in ("OOD", "extra") and v["kind"] == "two-class" and v["main_minus_arm"]}
    if not ood:
        return "no OOD set with both classes to compare"
    better = [n for n, v in ood.items() if v["main_minus_arm"]["verdict"] == "improved"]
    worse = [n for n, v in ood.items() if v["main_minus_arm"]["verdict"] == "degraded"]
    if folder == "arm_budget":
        if not better:
            text = ("on " + ", ".join(ood) + " the growing arm is not significantly above the "
                    "fixed-budget arm at the last step: the data do not show that more data adds "
                    "beyond the mixture (see the interval for how large a size effect remains "
                    "possible)")
        else:
            text = ("more data adds beyond diversity on " + ", ".join(better) + " (growing arm "
                    "significantly above the fixed-budget arm at the last step)")
        if worse:
            text += ("; the fixed-budget arm is significantly higher on " + ", ".join(worse))
        return text
    if not better:
        return ("the SAE probe is not significantly above the format-only probe on "
                + ", ".join(ood) + ": the OOD gains may be format detection, not intent detection")
    same = [n for n in ood if n not in better]
    return ("the SAE probe beats format-only on " + ", ".join(better)
            + (("; not significantly on " + ", ".join(same) + " (format detection cannot be "
                "ruled out there)") if same else ""))


def orderings_summary(results_dir):
    """Per ordering of the OOD sources: where the largest significant gain on each OOD set is."""
    root = Path(results_dir) / "orderings"
    if not root.is_dir():
        return {}
    out = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and step_files(p)):
        a, _ = analyze_folder(folder, conclude=False)
        order = folder.name.split("-")
        row = {}
        for name, s in a["sets"].items():
            k = s["inflection"]
            row[name] = {"inflection_step": k,
                         "added_source": order[k - 1] if k and 0 < k <= len(order) else None,
                         "metric": s["headline"],
                         "last": s["rows"][max(s["rows"])][s["headline"]]["value"]
                         if s["headline"] else None}
        out[folder.name] = {"order": order, "sets": row}
    return out


def transfer_summary(results_dir):
    """The transfer matrix JSON, if present (checked: results_read.read_transfer)."""
    return results_read.read_transfer(Path(results_dir) / "transfer_matrix.json")


def grid_summary(results_dir):
    """The grid summary JSON, if present (checked: results_read.read_grid)."""
    return results_read.read_grid(Path(results_dir) / "grid_summary.json")


def _gap(steps, sets, estimates):
    """Generalization gap per step: gold_106 AUROC minus the mean AUROC of the OOD sets with
    both classes (the sets that measure intent; all-AF sets are left out)."""
    ood = [n for n, s in sets.items() if s["role"] in ("OOD", "extra") and s["kind"] == "two-class"]
    out = {}
    if "gold_106" not in sets or not ood:
        return out
    for k in steps:
        gold = estimates.get((k, "gold_106"), {}).get("auroc")
        parts = [estimates.get((k, n), {}).get("auroc") for n in ood]
        if gold is None or any(p is None for p in parts):
            continue
        g = intervals.auroc_difference([(1.0, gold.parts)]
                                       + [(-1.0 / len(parts), p.parts) for p in parts])
        out[k] = {"gap": g["value"], "ci": g["ci"], "in_distribution": gold.value,
                  "ood_mean": float(np.mean([p.value for p in parts])),
                  "ood_sets": {n: "auroc" for n in ood}}
    return out


def _repeats(records, steps, sets):
    """Mean and sd across repeats per step, set and headline metric, with a spread flag."""
    out = {}
    for k in steps:
        reps = records[k].get("repeats") or []
        if len(reps) < 2:
            continue
        out[k] = {}
        for name, s in sets.items():
            m = s["headline"]
            vals = [r["metrics"].get(name, {}).get(m) for r in reps]
            vals = [v for v in vals if v is not None]
            if len(vals) < 2:
                continue
            ci = s["rows"].get(k, {}).get(m, {}).get("ci")
            spread = max(vals) - min(vals)
            width = (ci[1] - ci[0]) if ci else None
            out[k][name] = {"metric": m, "mean": float(np.mean(vals)),
                            "sd": float(np.std(vals, ddof=1)), "n": len(vals),
                            "range": float(spread), "ci_width": width,
                            "spread_exceeds_ci": bool(width is not None and spread > width)}
    return out


def anatomy(records, steps):
    """Per step: non-zero weights, top features, and top-100 overlap with the previous step."""
    out, prev = {}, None
    for k in steps:
        r = records[k]
        top = set(r.get("top100_ids") or [])
        jac = (len(top & prev) / len(top | prev)) if (prev is not None and top and prev) else None
        out[k] = {"n_nonzero": r.get("n_nonzero_weights"), "n_features": r.get("n_features"),
                  "top": r.get("top_features", []), "jaccard_top100_prev": jac}
        prev = top
    return out


# --------------------------------------------------------------------------------------------
# Solver: where each fit stopped, and the --solver-check control
# --------------------------------------------------------------------------------------------
def solver_summary(a):
    """Per step: the final fit's solver record and its CV folds' median gap; with the control
    present, each eval set's headline per step at both tolerances, the two verdicts and the
    objective's excess over the tight fit's."""
    if "solver" in a:
        return a["solver"]
    steps = {}
    for k in a["steps"]:
        rec = a["records"][k].get("solver")
        if not rec:
            continue
        folds = [f for f in rec["cv_folds"] if "relative_gap" in f]
        steps[k] = {"final": rec["final"],
                    "cv_n_iter": [f["n_iter"] for f in rec["cv_folds"]],
                    "cv_relative_gap": (statistics.median(f["relative_gap"] for f in folds)
                                        if folds else None)}
    out = {"steps": steps, "tol": a["config"].get("tol"), "check": _solver_check(a, steps)}
    a["solver"] = out
    return out


def _solver_check(a, steps):
    """The control's comparison, or None when it was not run."""
    path = Path(a["results_dir"]) / solver_check.FOLDER
    if not step_files(path):
        return None
    tight = analyze(path, controls=False)
    sets = {}
    for name, s in a["sets"].items():
        m = s["headline"]
        if m is None or name not in tight["sets"]:
            continue
        rows = {k: (s["rows"][k][m]["value"], tight["sets"][name]["rows"][k][m]["value"])
                for k in s["rows"] if k in tight["sets"][name]["rows"]
                and m in tight["sets"][name]["rows"][k]}
        sets[name] = {"metric": m, "rows": rows}
    excess = {}
    for k, st in steps.items():
        t = tight["records"].get(k, {}).get("solver", {}).get("final", {})
        if "objective" in st["final"] and t.get("objective"):
            excess[k] = st["final"]["objective"] / t["objective"] - 1.0
    return {"tol": tight["config"].get("tol"), "sets": sets, "excess": excess,
            "verdict": a["verdict"]["outcome"], "tight_verdict": tight["verdict"]["outcome"],
            "tight_converged": all(r.get("converged") and r.get("cv_converged")
                                   for r in tight["records"].values())}
