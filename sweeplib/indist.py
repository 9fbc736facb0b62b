"""The verdict's in-distribution test: does the AUROC on in-distribution data stay within the
tolerance from the first to the last step, drop by more, or can the data not tell?

Two independent paired changes (power.py says why they may be combined):
    gold_106            the hand-labelled set, scored by each step's final probe (reported alone)
    train out-of-fold   every `train` row scored out of fold at both steps (the fitting
                        procedure's change on ~25x more rows, with the training labels)
The call uses their inverse-variance combination unless the two disagree (Cochran's Q at
alpha) or the out-of-fold rows cannot be paired; then gold_106 alone decides. "holds": the
one-sided (1 - alpha) lower bound of the change exceeds -tolerance; "drops": the upper bound
lies below it.
"""
from __future__ import annotations

import numpy as np

from sweeplib import intervals, power

BASIS = {"combined": "gold_106 and the train rows' out-of-fold scores, inverse-variance "
                     "weighted",
         "gold_106": "gold_106 alone"}


def oof_pair(result, first, last):
    """(Estimate at first, Estimate at last, None) of the train rows' out-of-fold AUROC, or
    (None, None, reason) when they cannot be paired."""
    for k in (first, last):
        budget = (result.records[k].get("sample_weighting") or {}).get("budget_n")
        if budget:
            return None, None, f"step {k} trains on a fixed budget (a subset of train)"
    (ea, ya), (eb, yb) = (power.oof_estimate(result.scores[k]) for k in (first, last))
    if ea is None or eb is None:
        return None, None, "no out-of-fold scores of train rows with both classes"
    if len(ya) != len(yb) or not np.array_equal(ya, yb):
        return None, None, "the train rows differ between the steps"
    return ea, eb, None


def _side(ch, tol):
    """(lower bound, upper bound, holds, drops) of a Change or Combined."""
    lo, hi = ch.delta - ch.lower_arm, ch.delta + ch.upper_arm
    return lo, hi, bool(lo > -tol), bool(hi < -tol)


def _part(ch, tol, alpha, label):
    """One estimate's record: change, one-sided bounds, call and what it could detect (for
    'holds' and for 'drops'; rows needed toward the side the observed change lies on)."""
    lo, hi, holds, drops = _side(ch, tol)
    obs = None if holds or drops else ch.delta
    det = {call: power.as_dict(power.detectable(ch, alpha, -tol, sign, obs))
           for call, sign in (("holds", 1), ("drops", -1))}
    return {"label": label, "delta": ch.delta, "one_sided_lower": lo, "one_sided_upper": hi,
            "holds": holds, "drops": drops, "n_rows": ch.n_rows, "detectable": det}


def evidence(result, first, last, c, paired_gold):
    """The in-distribution evidence (verdict.json "in_distribution"): gold_106's own change
    (delta, ci, p_value, value_from/to stay gold_106's), the out-of-fold change, their
    combination, and the call (holds / drops / basis / one-sided bounds of what decided)."""
    ea = result.estimates[(first, "gold_106")]["auroc"]
    eb = result.estimates[(last, "gold_106")]["auroc"]
    two = intervals.change(ea, eb, paired=paired_gold)
    tol, a = c.gold_tolerance, c.alpha
    gold = power.change_of("gold_106", ea, eb, a, paired_gold)
    out = {"set": "gold_106", "metric": "auroc", "step_from": first, "step_to": last,
           "value_from": ea.value, "value_to": eb.value, **two, "tolerance": tol,
           "gold_106": _part(gold, tol, a, "hand-labelled"),
           "oof": None, "combined": None, "basis": "gold_106", "basis_note": None}
    oa, ob, why = oof_pair(result, first, last)
    if why is None:
        oof = power.change_of("train_oof", oa, ob, a, paired=True)
        out["oof"] = {**_part(oof, tol, a, "train rows, out of fold (training labels)"),
                      "value_from": oa.value, "value_to": ob.value}
        comb = power.combine([gold, oof])
        out["combined"] = {**_part(power.combined_change(comb, [gold, oof]), tol, a,
                                   "gold_106 + train out-of-fold"),
                           "weights": comb.weights, "heterogeneity_p": comb.heterogeneity_p}
        if comb.heterogeneity_p < a:
            why = (f"gold_106 and the out-of-fold change disagree (heterogeneity p "
                   f"{comb.heterogeneity_p:.3g} < {a}): gold_106 alone decides")
        else:
            out["basis"] = "combined"
    out["basis_note"] = why
    decided = out["combined"] if out["basis"] == "combined" else out["gold_106"]
    out.update(one_sided_lower=decided["one_sided_lower"],
               one_sided_upper=decided["one_sided_upper"], holds=decided["holds"],
               drops=decided["drops"], decision_delta=decided["delta"],
               detectable=decided["detectable"])
    return out


def describe(g):
    """One line of the in-distribution evidence for the verdict's reasons."""
    gd = g["gold_106"]
    text = (f"gold_106 (hand-labelled) AUROC {g['delta']:+.3f} [{g['ci'][0]:+.3f}, "
            f"{g['ci'][1]:+.3f}] from step {g['step_from']} to {g['step_to']}")
    if g["oof"]:
        o = g["oof"]
        text += (f"; train rows out of fold {o['value_from']:.3f} -> {o['value_to']:.3f} "
                 f"({o['delta']:+.3f}, {o['n_rows']} rows)")
    text += (f"; decided on {BASIS[g['basis']]}: change {g['decision_delta']:+.4f}, one-sided "
             f"bounds {g['one_sided_lower']:+.4f} to {g['one_sided_upper']:+.4f}")
    if g["basis_note"]:
        text += f" ({g['basis_note']})"
    if g["basis"] != "gold_106":
        text += (f"; gold_106 alone: {gd['one_sided_lower']:+.4f} to "
                 f"{gd['one_sided_upper']:+.4f}")
    return text


def _indist_power_lines(g):
    """What the in-distribution test could detect, and the rows an undecided call needs."""
    tol, dh, dd = g["tolerance"], g["detectable"]["holds"], g["detectable"]["drops"]
    out = [f"in-distribution ({BASIS[g['basis']]}, {dh['n_rows']:,} rows): with 80 % power it "
           f"shows 'holds' when the true change is above {-tol + dh['mde']:+.4f} and 'drops' "
           f"when below {-tol - dd['mde']:+.4f}"]
    if g["holds"] or g["drops"]:
        return out
    gd = g["gold_106"]["detectable"]
    need = gd["holds"]["rows_needed"] or gd["drops"]["rows_needed"]
    what = "stays within" if gd["holds"]["rows_needed"] else "drops by more than"
    if need:
        out.append(f"gold_106 would need about {need:,} rows (now {gd['holds']['n_rows']}) to "
                   f"show it {what} the {tol} tolerance, if the true change were the observed "
                   f"{g['gold_106']['delta']:+.3f}")
    scale = dh["scale_needed"] or dd["scale_needed"]
    if g["basis"] == "combined" and scale:
        out.append(f"the combined evidence would need about {scale:.1f}x its rows at the "
                   f"observed change {g['decision_delta']:+.4f}")
    if not scale:
        out.append("the observed change sits on the tolerance: no sample size decides it")
    return out


def ood_power(result, tests, c, paired):
    """Add to each OOD test what it could detect (Holm's first step: alpha / k, two-sided)
    and, when it is not called improved but its change is positive, the rows that would."""
    for t in tests:
        ea = result.estimates[(t["step_from"], t["set"])][t["metric"]]
        eb = result.estimates[(t["step_to"], t["set"])][t["metric"]]
        t["detectable"] = power.as_dict(power.for_change(
            ea, eb, c.alpha, paired=paired(t["set"], t["step_from"], t["step_to"]),
            family=len(tests), observed=None if t["improved"] else t["delta"]))


def power_lines(v):
    """What each of the verdict's tests could detect (console, report, verdict.json)."""
    out = []
    for t in v["ood_tests"]:
        d = t["detectable"]
        line = (f"{t['set']}: an improvement of {d['mde']:.3f} {t['metric']} or more is found "
                f"with 80 % power (Holm over {len(v['ood_tests'])}, alpha {v['criteria']['alpha']})")
        if d["rows_needed"]:
            line += (f"; about {d['rows_needed']:,} rows (now {d['n_rows']}) would show the "
                     f"observed {t['delta']:+.3f}")
        out.append(line)
    if v["in_distribution"]:
        out += _indist_power_lines(v["in_distribution"])
    return out


def power_text(v):
    """The report's block of what the tests could detect (None when there is nothing)."""
    lines = v.get("power") or []
    return ("what the tests could detect:\n" + "\n".join(f"- {x}" for x in lines)
            if lines else None)
