"""The answer: is the OOD failure a data problem, a method problem, both or neither?

    answer         when (every premise of the verdict holds; else `inconclusive`)
    data           diverse data fix OOD (the verdict's test: the reference probe, first -> last
                   step, an intent-measuring OOD set improves, Holm) and no method does
    method         some method arm trained on the first step's data alone beats the reference
                   at that step on an intent-measuring OOD set (paired AUROC change on the same
                   rows, Holm over arms x sets), its own AUROC interval lies above 0.5, and its
                   gold_106 AUROC is not shown to drop by more than the tolerance vs the
                   reference; diverse data do not fix it
    both           each alone fixes it
    neither        neither does (and at least one method arm was tested)
    inconclusive   a premise failed, or no method arm belongs to this run (--methods lr)

The in-distribution result (holds / drops / cannot tell) is reported beside the cause, in the
same sentence; it does not turn a shown cause into `inconclusive`. Read from methods.json and
methods_scores.npz (methods_run.py), checked to belong to the main sweep's run.
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import common
from sweeplib import intervals, results_read
from sweeplib.base import InputError

ANSWERS = ("data", "method", "both", "neither", "inconclusive")
FILE = "methods.json"


@dataclass
class MethodResults:
    """The method arms of a results folder: arm names (the reference first), their saved
    records, and the AUROC estimate of every (arm, step, set) with both classes."""
    doc: dict
    arms: list
    estimates: dict = field(default_factory=dict)
    transductive: set = field(default_factory=set)


# --------------------------------------------------------------------------------------------
# Read
# --------------------------------------------------------------------------------------------
def _load_scores(folder, doc, path):
    """The score arrays, their sha256 checked against methods.json."""
    files = doc.get("files") or {}
    name = files.get("scores")
    if not isinstance(name, str) or "/" in name or not (folder / name).is_file():
        raise InputError(f"{path}: its scores file ({name!r}) is missing; rerun with --methods")
    blob = (folder / name).read_bytes()
    if hashlib.sha256(blob).hexdigest() != files.get("scores_sha256"):
        raise InputError(f"{folder / name}: sha256 does not match {path.name}; rerun with "
                         "--methods")
    import io
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _eval_scores(result, k):
    """(set, its scores) of the eval sets of a step file (not its '_'-prefixed extras)."""
    return [(n, sc) for n, sc in result.scores[k].items() if not n.startswith("_")]


def _stale(result, doc, arrays):
    """Why methods.json does not belong to the step files' run (None when it does)."""
    for k, entry in doc["steps"].items():
        k = int(k)
        if k not in result.records:
            continue
        if entry.get("run_id") != result.records[k].get("run_id"):
            return f"step {k} was rewritten after the method arms were fitted (other run id)"
        for name, sc in _eval_scores(result, k):
            row = arrays.get(f"{k}|{name}|row")
            if row is not None and not np.array_equal(row, sc.get("row")):
                return f"its {name} rows at step {k} are not the step file's"
    return None


def read(result, linked, allow_mixed=False):
    """MethodResults of the main sweep's folder, or None (no methods.json, or one from another
    run: a warning line). linked: analysis.linked (config, inputs, data source, layer)."""
    folder = Path(result.results_dir)
    path = folder / FILE
    if not path.is_file():
        return None
    doc = results_read.read_json(path, "methods file")
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), dict) or not isinstance(
            doc.get("methods"), list):
        raise InputError(f"{path}: not a methods file (needs 'steps' and 'methods')")
    if not linked(result, doc, path, allow_mixed):
        return None
    arrays = _load_scores(folder, doc, path)
    why = _stale(result, doc, arrays)
    if why and not allow_mixed:
        print(f"warning: {path}: not from the main sweep's run ({why}); method arms not shown "
              "(rerun with --methods)", file=sys.stderr)
        return None
    arms = [m["name"] for m in doc["methods"]]
    out = MethodResults(doc, [doc.get("reference", "lr")] + arms,
                        transductive={m["name"] for m in doc["methods"] if m.get("transductive")})
    for k_text, entry in doc["steps"].items():
        k = int(k_text)
        if k not in result.records:
            continue
        for name, sc in _eval_scores(result, k):
            y = sc["label"]
            for arm in arms:
                s = arrays.get(f"{arm}|{k}|{name}")
                if s is None or len(s) != len(y):
                    continue
                est = intervals.auroc_estimate(s[y == 1], s[y == 0])
                if est is not None:
                    out.estimates[(arm, k, name)] = est
    return out


def estimate(result, mr, arm, k, name):
    """The AUROC Estimate of an arm (the reference: the step file's) at a step on a set."""
    if mr is None or arm == mr.arms[0]:
        return result.estimates.get((k, name), {}).get("auroc")
    return mr.estimates.get((arm, k, name))


# --------------------------------------------------------------------------------------------
# Evidence
# --------------------------------------------------------------------------------------------
def in_distribution(ea, eb, c):
    """gold_106 AUROC change a -> b: two-sided interval, one-sided bounds at 1 - alpha, and
    'holds' / 'drops' / 'cannot tell' against the tolerance."""
    two = intervals.change(ea, eb, paired=True)
    one = intervals.change(ea, eb, level=1 - 2 * c.alpha, paired=True)
    status = ("holds" if one["ci"][0] > -c.gold_tolerance else
              "drops" if one["ci"][1] < -c.gold_tolerance else "cannot tell")
    return {"delta": two["delta"], "ci": two["ci"], "one_sided": one["ci"], "status": status,
            "value_from": ea.value, "value_to": eb.value}


def method_tests(result, mr, sets, first, c):
    """Every (arm, set) at the first step vs the reference: paired AUROC change, Holm over the
    family; above chance; gold_106 vs the reference."""
    tests = []
    gold_ref = estimate(result, mr, mr.arms[0], first, "gold_106")
    for arm in mr.arms[1:]:
        gold_arm = estimate(result, mr, arm, first, "gold_106")
        gold = (in_distribution(gold_ref, gold_arm, c) if gold_ref is not None
                and gold_arm is not None else {"status": "not measured"})
        for name in sets:
            ref, est = estimate(result, mr, mr.arms[0], first, name), \
                estimate(result, mr, arm, first, name)
            if ref is None or est is None:
                continue
            d = intervals.change(ref, est, paired=True)
            ci = intervals.interval(est)
            tests.append({"method": arm, "set": name, "step": first, "value": est.value,
                          "ci": ci, "reference_value": ref.value, "delta": d["delta"],
                          "delta_ci": d["ci"], "p_value": d["p_value"],
                          "above_chance": bool(ci[0] > 0.5), "in_distribution": gold,
                          "transductive": arm in mr.transductive})
    for t, p in zip(tests, intervals.holm([t["p_value"] for t in tests])):
        t["p_adjusted"] = float(p)
        t["beats_reference"] = bool(p < c.alpha and t["delta"] > 0)
        t["claimed"] = bool(t["beats_reference"] and t["above_chance"]
                            and t["in_distribution"]["status"] != "drops")
    return tests


def _data_id(v):
    """The data half's in-distribution status from the verdict's gold_106 evidence."""
    g = v.get("in_distribution")
    if not g:
        return None
    return {"delta": g["delta"], "ci": g["ci"], "one_sided": [g["one_sided_lower"],
                                                              g["one_sided_upper"]],
            "status": "holds" if g["holds"] else "drops" if g["drops"] else "cannot tell",
            "value_from": g["value_from"], "value_to": g["value_to"]}


def decide(result, mr, c):
    """(answer, evidence) from the analysis (its verdict) and the method arms."""
    v = result.verdict
    main = [k for k in result.steps if k in common.STEP_BY_NUMBER]
    failed = [p for p in v["premises"] if not p["passed"]]
    ev = {"data_effect": None, "method_effect": None, "reasons": [],
          "multiplicity": "Holm over the method arms x intent-measuring OOD sets at the first "
                          "step (the data half: Holm over the sets, as the verdict)"}
    if failed:
        ev["reasons"] = [f"premise failed: {p['name']}: {p['detail']}" for p in failed]
        return "inconclusive", ev
    first = main[0]
    tests = v["ood_tests"]
    ev["data_effect"] = {"shown": any(t["improved"] for t in tests), "tests": tests,
                         "in_distribution": _data_id(v)}
    if mr is None or len(mr.arms) < 2 or not any(a for a in mr.arms[1:]
                                                 if (a, first, "gold_106") in mr.estimates
                                                 or any((a, first, s) in mr.estimates
                                                        for s in v["sets_used"])):
        ev["reasons"] = ["no method arm of this run at step "
                         f"{first} (run_all.py --methods ...): the method half is not tested"]
        return "inconclusive", ev
    mt = method_tests(result, mr, v["sets_used"], first, c)
    claimed = [t for t in mt if t["claimed"]]
    ev["method_effect"] = {"shown": bool(claimed), "step": first, "tests": mt,
                           "best": (max(claimed, key=lambda t: t["delta"]) if claimed else
                                    max(mt, key=lambda t: t["delta"]) if mt else None)}
    data, method = ev["data_effect"]["shown"], bool(claimed)
    answer = ("both" if data and method else "data" if data else "method" if method
              else "neither")
    return answer, ev


# --------------------------------------------------------------------------------------------
# The sentence
# --------------------------------------------------------------------------------------------
def _ci(x):
    """'[+0.01, +0.10]'."""
    return f"[{x[0]:+.3f}, {x[1]:+.3f}]"


def _data_text(ev):
    """'diverse data fix OOD (benchmark +0.456 [...] from step 0 to 3)' or 'do not'."""
    tests = ev["data_effect"]["tests"]
    shown = [t for t in tests if t["improved"]] or tests
    parts = "; ".join(f"{t['set']} AUROC {t['delta']:+.3f} {_ci(t['ci'])} from step "
                      f"{t['step_from']} to {t['step_to']}" for t in shown)
    verb = "fix" if ev["data_effect"]["shown"] else "do not fix"
    return f"diverse data {verb} OOD ({parts or 'no OOD set tested'})"


def _method_text(ev):
    """'massmean+rownorm trained on step 0's data alone beats the reference on benchmark
    (0.93 vs 0.25, +0.68 [...], Holm p 1e-9)' or 'no method ... (best: ...)'."""
    me = ev["method_effect"]
    t = me["best"]
    if t is None:
        return "no method arm could be compared with the reference"
    tag = " (transductive)" if t["transductive"] else ""
    body = (f"{t['method']}{tag} on {t['set']}: {t['value']:.3f} vs the reference's "
            f"{t['reference_value']:.3f}, {t['delta']:+.3f} {_ci(t['delta_ci'])}, adjusted p "
            f"{t['p_adjusted']:.2g}")
    n = len(me["tests"])
    if me["shown"]:
        return (f"a method trained on step {me['step']}'s data alone fixes it ({body}; Holm "
                f"over {n})")
    why = ("" if not t["beats_reference"] else "; not above chance" if not t["above_chance"]
           else "; gives up in-distribution")
    return (f"no method trained on step {me['step']}'s data beats the reference (best: "
            f"{body}{why}; Holm over {n})")


def _id_text(g, who=""):
    """'holds (gold_106 -0.006 [...])'."""
    if not g or "delta" not in g:
        return f"{who}not measured"
    return f"{who}{g['status']} (gold_106 {g['delta']:+.3f} {_ci(g['ci'])})"


def sentence(answer, ev):
    """The answer in one sentence, the in-distribution result beside the cause."""
    if answer == "inconclusive":
        return "inconclusive: " + (ev["reasons"][0] if ev["reasons"] else "see the reasons")
    data_id = _id_text(ev["data_effect"]["in_distribution"], "")
    best = ev["method_effect"]["best"] or {}
    method_id = _id_text(best.get("in_distribution"), "")
    if answer == "data":
        return (f"a data problem: {_data_text(ev)}; {_method_text(ev)}; in-distribution: "
                f"{data_id}")
    if answer == "method":
        return (f"a method problem: {_method_text(ev)}; {_data_text(ev)}; in-distribution "
                f"(vs the reference at step {ev['method_effect']['step']}): {method_id}")
    if answer == "both":
        return (f"both: {_data_text(ev)}, and {_method_text(ev)}; in-distribution: data "
                f"{data_id}, method {method_id}")
    return f"neither: {_data_text(ev)}, and {_method_text(ev)}; in-distribution: {data_id}"


def add_answer(result, mr, c):
    """Put the answer, its sentence and evidence into result.verdict (verdict.json's
    top-level 'answer', 'answer_sentence' and 'answer_evidence')."""
    if result.verdict is None:
        return
    answer, ev = decide(result, mr, c)
    ev["sentence"] = sentence(answer, ev)
    result.verdict["answer"] = answer
    result.verdict["answer_sentence"] = ev["sentence"]
    result.verdict["answer_evidence"] = ev
