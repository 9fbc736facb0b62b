"""With --repeats R: do the verdict's decisive calls agree across seeds? A call that flips is
not decisive.

The verdict's intervals are the first seed's (its split and fits); each repeated seed keeps
only point values (step records' "repeats"). A repeat agrees with a call when its own point
change lies on the call's side: an OOD "improved" needs a positive change in every seed; an
in-distribution "holds" needs every seed's change above -tolerance, "drops" below it (the
combined change with the first seed's weights when the call was made on the combined
evidence). A seed whose point change is on the other side could not have made the call.
"""
from __future__ import annotations


def _pairs(result, first, last):
    """[(repeat at first, repeat at last)] of the seeds both steps ran, or None (< 2)."""
    ra = result.records[first].get("repeats") or []
    rb = result.records[last].get("repeats") or []
    if len(ra) < 2 or len(ra) != len(rb):
        return None
    return list(zip(ra, rb))


def _in_distribution_values(pairs, g):
    """Per seed: the point change the in-distribution call was made on (None where a seed
    lacks it)."""
    out = []
    for ra, rb in pairs:
        dg = _delta(ra, rb, lambda r: r["metrics"].get("gold_106", {}).get("auroc"))
        if g["basis"] == "combined":
            do = _delta(ra, rb, lambda r: r.get("oof_train_auroc"))
            w = g["combined"]["weights"]
            dg = None if dg is None or do is None else w["gold_106"] * dg + w["train_oof"] * do
        out.append(dg)
    return out


def _delta(ra, rb, get):
    """get(rb) - get(ra), or None when either is missing."""
    a, b = get(ra), get(rb)
    return None if a is None or b is None else b - a


def calls(v, result, first, last):
    """The decisive calls across seeds: {"repeats", "ood": {set: ...}, "in_distribution",
    "agree"}, or None without repeats."""
    pairs = _pairs(result, first, last)
    if pairs is None:
        return None
    out = {"repeats": len(pairs), "ood": {}, "in_distribution": None}
    agree = v.get("repeat_agreement") or {}
    for t in v["ood_tests"]:
        if t["improved"] and t["set"] in agree:
            d = agree[t["set"]]["deltas"]
            out["ood"][t["set"]] = {"call": "improved", "values": d,
                                    "agree": bool(d) and all(x > 0 for x in d)}
    g = v["in_distribution"]
    if g and (g["holds"] or g["drops"]):
        vals = _in_distribution_values(pairs, g)
        tol = g["tolerance"]
        ok = None if any(x is None for x in vals) else all(    # None: not recorded
            (x > -tol) if g["holds"] else (x < -tol) for x in vals)
        out["in_distribution"] = {"call": "holds" if g["holds"] else "drops",
                                  "values": vals, "agree": ok}
    parts = list(out["ood"].values()) + ([out["in_distribution"]]
                                         if out["in_distribution"] else [])
    out["agree"] = all(p["agree"] is not False for p in parts)
    return out


def apply(v, result, first, last):
    """Record the calls across seeds; a decisive outcome whose in-distribution call or every
    OOD improvement flips becomes inconclusive (reasons say which)."""
    rc = v["repeat_calls"] = calls(v, result, first, last)
    if rc is None or v["outcome"] not in ("diversity_helps", "trade_off"):
        return v
    flips = [f"{name} 'improved' (changes {_fmt(p['values'])})"
             for name, p in rc["ood"].items() if not p["agree"]]
    ood_all_flip = rc["ood"] and all(not p["agree"] for p in rc["ood"].values())
    g = rc["in_distribution"]
    if g and g["agree"] is False:
        flips.append(f"in-distribution '{g['call']}' (changes {_fmt(g['values'])}, tolerance "
                     f"{v['in_distribution']['tolerance']})")
    if ood_all_flip or (g and g["agree"] is False):
        v["reasons"].append(f"not decisive: across {rc['repeats']} seeds the call(s) "
                            + "; ".join(flips) + " flip")
        v["outcome"] = "inconclusive"
        v["next_steps_key"] = "repeats_flip"
    elif flips:
        v["reasons"].append("note: across seeds " + "; ".join(flips) + " flip")
    if g and g["agree"] is None:
        v["reasons"].append("note: the repeated seeds do not record the out-of-fold AUROC "
                            "(results written before it): the in-distribution call is not "
                            "checked across seeds")
    return v


def _fmt(values):
    """'+0.012, -0.003, n/a'."""
    return ", ".join("n/a" if x is None else f"{x:+.3f}" for x in values)
