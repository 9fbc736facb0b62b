"""What the control folders show next to the main sweep: the comparison with each arm and its
plain-language reading, where the gains fall in each ordering of the OOD sources, and the
--solver-check comparison. Pure functions over analyses (analysis.Analysis): analysis.py reads
the folders and hands them over.
"""
from __future__ import annotations

import numpy as np

import common
from sweeplib import intervals

ARMS = {"arm_budget": "fixed budget", "baseline_format": "format-only baseline"}


# --------------------------------------------------------------------------------------------
# Arms
# --------------------------------------------------------------------------------------------
def arm_comparison(folder, main, arm):
    """Main sweep vs one control arm: headline per step and the last-step paired difference
    (main - arm) on the same eval rows (per comparison, not multiplicity-adjusted)."""
    per_set = {}
    for name, s in main.sets.items():
        if name not in arm.sets or s["headline"] is None:
            continue
        m = s["headline"]
        common_steps = [k for k in main.steps if k in arm.sets[name]["rows"]
                        and k in s["rows"] and k in common.STEP_BY_NUMBER]
        rows = {k: {"main": s["rows"][k].get(m, {}).get("value"),
                    "arm": arm.sets[name]["rows"][k].get(m, {}).get("value")}
                for k in common_steps}
        diff = _last_step_difference(main, arm, name, m, common_steps)
        per_set[name] = {"metric": m, "role": s["role"], "kind": s["kind"], "rows": rows,
                         "main_minus_arm": diff, "arm_overall": arm.sets[name]["overall"]}
    return {"label": ARMS[folder], "sets": per_set, "records": arm.records, "analysis": arm,
            "budget_n": arm.config.get("budget_n"),
            "conclusion": arm_conclusion(folder, per_set)}


def _last_step_difference(main, arm, name, m, steps):
    """Paired difference main - arm of metric m on set name at the last common step, or None."""
    if not steps:
        return None
    k = steps[-1]
    em, ea = main.estimates[(k, name)].get(m), arm.estimates[(k, name)].get(m)
    if em is None or ea is None:
        return None
    r1, r2 = main.scores[k][name].get("row"), arm.scores[k][name].get("row")
    diff = intervals.change(ea, em, paired=r1 is not None and r2 is not None
                            and np.array_equal(r1, r2))
    diff["verdict"] = intervals.call(diff["delta"], diff["p_value"])
    diff["step"] = k
    return diff


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


# --------------------------------------------------------------------------------------------
# Orderings
# --------------------------------------------------------------------------------------------
def ordering_row(order, result):
    """Where the largest significant gain on each set falls in one ordering of the OOD sources
    (order: the sources in the order they were added; result: that folder's analysis)."""
    row = {}
    for name, s in result.sets.items():
        k = s["inflection"]
        row[name] = {"inflection_step": k,
                     "added_source": order[k - 1] if k and 0 < k <= len(order) else None,
                     "metric": s["headline"],
                     "last": s["rows"][max(s["rows"])][s["headline"]]["value"]
                     if s["headline"] else None}
    return {"order": order, "sets": row}


# --------------------------------------------------------------------------------------------
# Solver check
# --------------------------------------------------------------------------------------------
def solver_check_comparison(result, tight, steps):
    """The --solver-check comparison: each set's headline per step at both tolerances, the
    default fits' objective above the tight fits', both verdicts (tight: the analysis of
    solver_check/; steps: solver records per step of the main sweep)."""
    sets = {}
    for name, s in result.sets.items():
        m = s["headline"]
        if m is None or name not in tight.sets:
            continue
        rows = {k: (s["rows"][k][m]["value"], tight.sets[name]["rows"][k][m]["value"])
                for k in s["rows"] if k in tight.sets[name]["rows"]
                and m in tight.sets[name]["rows"][k]}
        sets[name] = {"metric": m, "rows": rows}
    excess = {}
    for k, st in steps.items():
        t = tight.records.get(k, {}).get("solver", {}).get("final", {})
        if "objective" in st["final"] and t.get("objective"):
            excess[k] = st["final"]["objective"] / t["objective"] - 1.0
    return {"tol": tight.config.get("tol"), "sets": sets, "excess": excess,
            "verdict": result.verdict["outcome"], "tight_verdict": tight.verdict["outcome"],
            "tight_converged": all(r.get("converged") and r.get("cv_converged")
                                   for r in tight.records.values())}
