"""Compute once, format twice: the analysis behind compare_all_steps.py and generate_report.py.

`analyze(results_dir)` reads the step files, checks they belong together, recomputes paired
bootstrap statistics from the saved per-sample scores (no retraining) and returns one dict.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import common
import probe
import stats

HARD_NEGATIVE_CLASSES = ("hard_negative", "compliant_hard_negative")
# metrics compared across steps; the first defined one is a set's headline
TWO_CLASS_METRICS = ("auroc", "recall_at_fpr_5", "recall_at_fpr_1", "accuracy")
ONE_CLASS_METRICS = ("auroc_vs_reference_negatives", "detection_rate", "recall_at_fpr_5",
                     "recall_at_fpr_1")
METRIC_LABELS = {
    "auroc": "AUROC",
    "auroc_vs_reference_negatives": "AUROC vs ref. negatives",
    "detection_rate": "detection rate (AF scored >= 0.5)",
    "recall_at_fpr_5": "recall @ 5% train-FPR",
    "recall_at_fpr_1": "recall @ 1% train-FPR",
    "accuracy": "accuracy @ 0.5",
    "eval_fpr_5": "FPR on own negatives @ 5% threshold",
}
GOLD_DROP_TOLERANCE = 0.0   # a significant gold_106 drop (paired CI below 0) counts as a drop


def load_results(results_dir, allow_mixed=False):
    """Step records and scores from a results folder; refuse files from mismatched runs."""
    results_dir = Path(results_dir)
    records, scores, missing = {}, {}, []
    for step in common.STEPS + getattr(common, "EXTRA_STEPS", ()):
        paths = probe.output_paths(results_dir, step)
        if not paths["json"].exists():
            missing.append(step.number)
            continue
        try:
            record = json.loads(paths["json"].read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise common.InputError(f"{paths['json']}: not valid JSON ({e})") from None
        if not paths["scores"].exists():
            raise common.InputError(f"{paths['scores']}: missing (its step JSON exists)")
        scores[step.number] = probe.load_scores(paths["scores"], record.get("run_id"))
        records[step.number] = record
    if not records:
        raise common.InputError(f"{results_dir}: no step results found (run run_all.py first)")
    if not allow_mixed:
        _check_same_run(records, results_dir)
    return records, scores, missing


def _check_same_run(records, results_dir):
    """Raise when steps differ in config, inputs or data source."""
    items = sorted(records.items())
    k0, r0 = items[0]
    for k, r in items[1:]:
        for field in ("data_source", "layer"):
            if r.get(field) != r0.get(field):
                raise common.InputError(f"{results_dir}: step {k} and step {k0} differ in "
                                        f"'{field}' ({r.get(field)!r} vs {r0.get(field)!r}); "
                                        "rerun or pass --allow-mixed")
        c0, c = common.comparable(r0["config"]), common.comparable(r["config"])
        for key in sorted(set(c0) | set(c)):
            if c0.get(key) != c.get(key):
                raise common.InputError(f"{results_dir}: step {k} and step {k0} differ in config "
                                        f"'{key}' ({c.get(key)!r} vs {c0.get(key)!r}); rerun or "
                                        "pass --allow-mixed")
        ins0, ins = r0.get("inputs", {}), r.get("inputs", {})
        changed = sorted(p for p in set(ins0) | set(ins) if ins0.get(p) != ins.get(p))
        if changed:
            raise common.InputError(f"{results_dir}: step {k} and step {k0} were computed from "
                                    f"different input files ({changed[0]}); rerun or pass "
                                    "--allow-mixed")


def _boot_arrays(record, scores, name, cfg):
    """Bootstrap samples of every flat metric of one eval set, on the set's shared resamples."""
    s, y = scores[name]["score"], scores[name]["label"]
    idx = stats.stratified_bootstrap_indices(y, cfg["n_boot"], probe.boot_seed(cfg["seed"], name))
    entry = record["evaluation"][name]
    kwargs = {}
    ref = entry.get("reference_negatives")
    if ref and ref in scores:
        neg = scores[ref]["score"][scores[ref]["label"] == 0]
        kwargs = {"reference_neg_scores": neg,
                  "ref_idx": stats.stratified_bootstrap_indices(
                      np.zeros(len(neg), dtype=int), cfg["n_boot"],
                      probe.boot_seed(cfg["seed"], ref + ":neg"))}
    return stats.bootstrap_metrics(s, y, threshold_05=0.0,
                                   thresholds=record["thresholds"]["log_odds"], idx=idx, **kwargs)


def headline_metric(entry):
    """The metric a set is judged by: AUROC where defined, else AUROC vs reference negatives,
    else detection rate."""
    for m in ("auroc", "auroc_vs_reference_negatives", "detection_rate"):
        if entry.get(m) is not None:
            return m
    return None


def analyze(results_dir, allow_mixed=False):
    """Everything the comparison and the report show, as one dict."""
    records, scores, missing = load_results(results_dir, allow_mixed)
    steps = sorted(records)
    main_steps = [k for k in steps if k in common.STEP_BY_NUMBER]
    first = records[steps[0]]
    cfg = first["config"]
    out = {"results_dir": str(results_dir), "steps": steps, "missing": missing,
           "records": records, "config": cfg, "data_source": first.get("data_source"),
           "layer": first.get("layer"), "inputs": first.get("inputs", {}),
           "versions": first.get("versions", {}), "run_ids": sorted({r.get("run_id") for r in
                                                                     records.values()})}
    out["progression"] = [{
        "step": k, "name": records[k]["name"], "n": records[k]["n_training_samples"],
        "af": records[k].get("n_training_af"), "breakdown": records[k]["training_breakdown"],
        "cv_mean": records[k]["cv_auroc_mean"], "cv_std": records[k]["cv_auroc_std"],
        "train_accuracy": records[k]["train_accuracy"], "converged": records[k]["converged"],
        "n_nonzero": records[k].get("n_nonzero_weights"), "n_iter": records[k].get("n_iter")}
        for k in steps]
    sets = {}
    set_names = [n for n in common.EVAL_SETS if any(n in records[k]["evaluation"] for k in steps)]
    boots = {}
    for name in set_names:
        present = [k for k in steps if name in records[k]["evaluation"]]
        entry0 = records[present[0]]["evaluation"][name]
        kind = "two-class" if entry0.get("auroc") is not None else "single-class"
        metrics = TWO_CLASS_METRICS if kind == "two-class" else ONE_CLASS_METRICS
        metrics = [m for m in metrics
                   if any(probe.flat_metrics(records[k]["evaluation"][name]).get(m) is not None
                          for k in present)]
        rows = {}
        for k in present:
            entry = records[k]["evaluation"][name]
            flat = probe.flat_metrics(entry)
            b = _boot_arrays(records[k], scores[k], name, cfg)
            boots[(k, name)] = (b, flat)
            ci = stats.summarize(b)
            rows[k] = {m: {"value": flat.get(m), "ci": list(ci[m]) if m in ci else None}
                       for m in metrics + ["eval_fpr_5", "eval_fpr_1"] if m in flat}
            rows[k]["n"] = entry["n_samples"]
            rows[k]["af"] = entry["af_samples"]
        deltas = {}
        chain = [k for k in present if k in main_steps]
        for a, b in zip(chain, chain[1:]):
            deltas[b] = {}
            for m in metrics:
                ba, fa = boots[(a, name)]
                bb, fb = boots[(b, name)]
                if m in ba and m in bb and fa.get(m) is not None and fb.get(m) is not None:
                    deltas[b][m] = stats.paired_delta(ba[m], bb[m], fa[m], fb[m])
        head = metrics[0] if metrics else None
        inflection = None
        if head and len(chain) > 1:
            inflection = stats.inflection_step([deltas[b].get(head) for b in chain[1:]], chain)
        overall = None
        if head and len(chain) > 1:
            (ba, fa), (bb, fb) = boots[(chain[0], name)], boots[(chain[-1], name)]
            if head in ba and head in bb:
                overall = stats.paired_delta(ba[head], bb[head], fa[head], fb[head])
        sets[name] = {"kind": kind, "title": common.DATASETS[name].title,
                      "role": "in-distribution" if common.DATASETS[name].regime == "scratchpad"
                      else "OOD", "metrics": metrics, "headline": head, "rows": rows,
                      "deltas": deltas, "inflection": inflection, "overall": overall,
                      "reference": entry0.get("reference_negatives"),
                      "auroc_note": entry0.get("auroc_note")}
    out["sets"] = sets
    out["gap"] = _gap(steps, sets, boots)
    out["per_class"] = {k: records[k]["evaluation"]["benchmark"]["per_class"]
                        for k in steps if "benchmark" in records[k]["evaluation"]}
    out["repeats"] = _repeats(records, steps, sets)
    out["anatomy"] = anatomy(records, steps)
    out["audit"] = first.get("leakage_audit")
    out["verdict"] = verdict(sets)
    out["findings"] = findings(out)
    return out


def _gap(steps, sets, boots):
    """Generalization gap per step: gold_106 AUROC minus the mean OOD headline metric."""
    gold = sets.get("gold_106")
    ood = [n for n, s in sets.items() if s["role"] == "OOD" and s["headline"]]
    out = {}
    if not gold or not ood:
        return out
    for k in steps:
        if (k, "gold_106") not in boots or not all((k, n) in boots for n in ood):
            continue
        bg, fg = boots[(k, "gold_106")]
        parts = [(boots[(k, n)][0].get(sets[n]["headline"]),
                  boots[(k, n)][1].get(sets[n]["headline"])) for n in ood]
        parts = [(b, v) for b, v in parts if b is not None and v is not None]
        if not parts or fg.get("auroc") is None:
            continue
        ood_boot = np.mean([b for b, _ in parts], axis=0)
        ood_point = float(np.mean([v for _, v in parts]))
        g = stats.gap_ci(bg["auroc"], ood_boot, fg["auroc"], ood_point)
        out[k] = {"gap": g["gap"] if "gap" in g else fg["auroc"] - ood_point,
                  "ci": list(g.get("ci", [None, None])), "in_distribution": fg["auroc"],
                  "ood_mean": ood_point, "ood_sets": {n: sets[n]["headline"] for n in ood}}
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


def verdict(sets):
    """Which of three outcomes the data supports, with the criteria used."""
    criteria = ("OOD improves: the paired bootstrap CI of (last step - first step) of an OOD "
                "set's headline metric lies above 0; in-distribution drops: the same CI for "
                "gold_106 AUROC lies below 0.")
    ood_gain = [n for n, s in sets.items() if s["role"] == "OOD" and s["overall"]
                and s["overall"]["verdict"] == "improved"]
    gold = sets.get("gold_106", {}).get("overall")
    gold_drop = bool(gold and gold["verdict"] == "degraded")
    if not ood_gain:
        outcome, steps_next = "no improvement", [
            "try another layer (e.g. --layer 53, which carries more sycophant signal)",
            "check the activation regimes: a scaler fitted on training format cannot rank OOD data",
            "try a method change (per-source normalization, a non-linear probe)"]
    elif gold_drop:
        outcome, steps_next = "trade-off (in-distribution drops)", [
            "rebalance or weight the sources (--source-weight equal, --class-weight balanced)",
            "tune regularization (-C) on the mixed data",
            "check whether the OOD gains are format detection (format-only baseline)"]
    else:
        outcome, steps_next = "diversity helps without hurting in-distribution", [
            "confirm with more seeds (--repeats) and a fixed-budget arm (more data vs more diverse)",
            "check the benchmark hard negatives: OOD-format all-AF sources can teach 'format = AF'",
            "validate on a new held-out distribution before deploying the probe"]
    return {"outcome": outcome, "ood_sets_improved": ood_gain, "gold_drop": gold_drop,
            "criteria": criteria, "next_steps": steps_next}


def findings(a):
    """Short plain-language findings drawn from the analysis."""
    out = []
    sets, steps = a["sets"], a["steps"]
    for name, s in sets.items():
        if s["kind"] == "single-class":
            rows = s["rows"]
            first, last = steps[0], max(rows)
            if first in rows and rows[first].get("detection_rate"):
                d0 = rows[first]["detection_rate"]["value"]
                d1 = rows[last]["detection_rate"]["value"] if last != first else None
                out.append(f"{name}: detection rate {d0:.1%} at step {first}"
                           + (f", {d1:.1%} at step {last}" if d1 is not None else "")
                           + " (all-AF set: a rise can be 'OOD format = AF'; see the benchmark "
                             "negatives)")
    for name, s in sets.items():
        if s["inflection"] is not None:
            out.append(f"{name}: largest significant gain in {METRIC_LABELS[s['headline']]} "
                       f"at step {s['inflection']}")
        elif len(s["rows"]) > 1:
            out.append(f"{name}: no step changes {METRIC_LABELS.get(s['headline'], '?')} "
                       "significantly")
    pc = a["per_class"]
    if pc:
        k = max(pc)
        hn = [c for c in HARD_NEGATIVE_CLASSES if c in pc[k]]
        if hn:
            n = sum(pc[k][c]["n"] for c in hn)
            fp = sum(pc[k][c]["flagged_at_0.5"] * pc[k][c]["n"] for c in hn) / n
            out.append(f"benchmark hard negatives at step {k}: {fp:.1%} flagged at 0.5 (n={n})")
    if a["gap"]:
        k0, k1 = min(a["gap"]), max(a["gap"])
        out.append(f"generalization gap {a['gap'][k0]['gap']:+.3f} at step {k0}"
                   + (f" -> {a['gap'][k1]['gap']:+.3f} at step {k1}" if k1 != k0 else ""))
    audit = a.get("audit")
    if audit and audit.get("n_pairs_with_duplicates"):
        out.append(f"leakage audit: duplicates found in {audit['n_pairs_with_duplicates']} "
                   "training/eval pair(s); see the audit section")
    return out
