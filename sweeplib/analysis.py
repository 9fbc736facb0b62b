"""Compute once, format twice: the analysis behind the comparison, the report, the dashboard,
the figures and the verdict.

    result = analyze(results_dir)     # an Analysis: result.sets, result.verdict, ...

analyze() reads the step files (results_read.load_folder), checks they belong together,
recomputes every metric, interval and paired step-to-step change from the saved per-sample
scores (no retraining; intervals.py), adjusts the step-to-step calls for multiplicity (Holm),
adds the verdict (verdict.py) and reads the control folders and files next to the sweep
(controls_analysis.py compares them with it).
"""
from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import common
from sweeplib import base, cause, config, controls_analysis, hints, intervals, results_read
from sweeplib import solver_check, verdict
from sweeplib.metrics import set_estimates

# metrics compared across steps; the first defined one is a set's headline
TWO_CLASS_METRICS = ("auroc", "recall_at_fpr_5", "recall_at_fpr_1", "accuracy")
ONE_CLASS_METRICS = ("auroc_vs_reference_negatives", "detection_rate", "recall_at_fpr_5",
                     "recall_at_fpr_1")
ALPHA = intervals.ALPHA       # two-sided level of every call (improved / degraded)


@dataclass
class Analysis:
    """Everything shown about one results folder, computed once from its step files."""
    results_dir: str = ""
    steps: list = field(default_factory=list)          # step numbers with results, ascending
    missing: list = field(default_factory=list)        # sweep steps without results
    records: dict = field(default_factory=dict)        # step -> its JSON record
    scores: dict = field(default_factory=dict)         # step -> {set: {field: array}}
    config: dict = field(default_factory=dict)         # the recorded config (first step)
    data_source: str | None = None                     # "cache" or "demo"
    demo: dict | None = None                           # the demo generator's settings
    layer: int | None = None
    inputs: dict = field(default_factory=dict)         # input fingerprints
    versions: dict = field(default_factory=dict)
    run_ids: list = field(default_factory=list)
    progression: list = field(default_factory=list)    # training mix and CV per step
    sets: dict = field(default_factory=dict)           # eval set -> rows, deltas, headline, ...
    estimates: dict = field(default_factory=dict)      # (step, set) -> {metric: Estimate}
    n_step_comparisons: int = 0                        # the Holm family of step-to-step calls
    gap: dict = field(default_factory=dict)            # step -> generalization gap
    per_class: dict = field(default_factory=dict)      # step -> benchmark per fine class
    repeats: dict = field(default_factory=dict)        # step -> set -> spread across seeds
    anatomy: dict = field(default_factory=dict)        # step -> weights, top features
    audit: dict | None = None                          # the leakage audit
    verdict: dict | None = None                        # verdict.decide (None for controls)
    findings: list = field(default_factory=list)       # verdict.findings
    arms: dict | None = None          # controls (analyze(controls=True)): arm comparisons,
    orderings: dict | None = None     # orderings, transfer_matrix.json, grid_summary.json
    transfer: dict | None = None
    grid: dict | None = None
    solver: dict | None = None        # solver_summary(), made when first asked for
    methods: object = None            # cause.MethodResults of methods.json (controls=True)


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
        raise base.InputError(f"{results_dir}: no step results found (write them with "
                              f"{hints.command('run_all.py', '--results-dir', results_dir)} "
                              "and --cache-dir DIR or --demo)")
    if not allow_mixed:
        _check_same_run(records, results_dir)
    missing = [k for k in common.STEP_BY_NUMBER if k not in records]
    return records, scores, missing


def analyze(results_dir, allow_mixed=False, controls=True, criteria=None):
    """The Analysis of a results folder; with controls, also of the control folders and files
    next to it (arms, orderings, transfer matrix, grid summary)."""
    result = analyze_folder(results_dir, allow_mixed, criteria)
    if controls:
        result.arms = {}
        for folder in controls_analysis.ARMS:
            if step_files(Path(results_dir) / folder):
                arm = analyze_folder(Path(results_dir) / folder, conclude=False)
                if linked(result, arm, Path(results_dir) / folder, allow_mixed):
                    result.arms[folder] = controls_analysis.arm_comparison(folder, result, arm)
        result.orderings = orderings_summary(results_dir, result, allow_mixed)
        result.transfer = transfer_summary(results_dir, result, allow_mixed)
        result.grid = grid_summary(results_dir, result, allow_mixed)
        result.methods = cause.read(result, linked, allow_mixed)
        cause.add_answer(result, result.methods, criteria or verdict.Criteria())
    return result


# what each control changes on purpose; everything else must be the main sweep's
CONTROL_KEYS = {"arm_budget": {"budget_n"}, "baseline_format": {"baseline"},
                solver_check.FOLDER: {"tol", "max_iter"}}


def linked(main, control, where, allow_mixed=False):
    """True when a control (an Analysis, or a JSON document with config, inputs, data_source
    and layer) was computed from the main sweep's input files, data source, layer and config
    (but for what the control changes); else a warning line, and it is not shown."""
    get = control.get if isinstance(control, dict) else lambda key: getattr(control, key)
    why = None
    for key in ("data_source", "layer"):
        if why is None and get(key) != getattr(main, key):
            why = f"its {key} is {get(key)!r}, the main sweep's {getattr(main, key)!r}"
    allowed = CONTROL_KEYS.get(Path(where).name, set()) | {"cache_dir"}   # inputs decide
    c0, c = config.comparable(main.config), config.comparable(get("config") or {})
    keys = sorted(k for k in set(c0) | set(c) if k not in allowed and c0.get(k) != c.get(k))
    if why is None and keys:
        why = (f"its config '{keys[0]}' is {_short(c.get(keys[0]))}, the main sweep's "
               f"{_short(c0.get(keys[0]))}")
    if why is None and _by_name(get("inputs") or {}) != _by_name(main.inputs):
        why = "it was computed from other input files"
    if why is None or allow_mixed:
        return True
    print(f"warning: {where}: not from the main sweep's run ({why}); not shown "
          "(rerun the control, or pass --allow-mixed)", file=sys.stderr)
    return False


def run_folders(result):
    """The folders (relative to the results folder, '.' for itself) that belong to the main
    sweep's run by the rule every renderer uses (linked; the grid summary's kept cells): the
    console and report show their controls, the dashboard shows exactly these cells."""
    keep = {"."} | set(result.arms or {}) | {f"orderings/{n}" for n in result.orderings or {}}
    if (solver_summary(result) or {}).get("check") is not None:
        keep.add(solver_check.FOLDER)
    keep |= {Path(c["path"]).as_posix() for c in (result.grid or {}).get("cells", [])}
    return keep


def _by_name(inputs):
    """Input fingerprints keyed by file name (a relative and an absolute path name one file)."""
    return {Path(p).name: fp for p, fp in inputs.items()}


def analyze_folder(results_dir, allow_mixed=False, criteria=None, conclude=True):
    """The Analysis of one folder (no controls); conclude=False (control arms, orderings)
    skips the verdict and the findings."""
    records, scores, missing = load_results(results_dir, allow_mixed)
    steps = sorted(records)
    first = records[steps[0]]
    result = Analysis(
        results_dir=str(results_dir), steps=steps, missing=missing, records=records,
        scores=scores, config=first["config"], data_source=first.get("data_source"),
        demo=first.get("demo"), layer=first.get("layer"), inputs=first.get("inputs", {}),
        versions=first.get("versions", {}),
        run_ids=sorted({r.get("run_id") for r in records.values()}),
        progression=[_progression(k, records[k]) for k in steps],
        audit=first.get("leakage_audit"))
    seen = list(dict.fromkeys(n for k in steps for n in records[k]["evaluation"]))
    for name in ([n for n in common.EVAL_SETS if n in seen]
                 + [n for n in seen if n not in common.EVAL_SETS]):
        result.sets[name] = _set_analysis(name, result)
    result.n_step_comparisons = _adjust_step_calls(result.sets)
    result.gap = _gap(steps, result.sets, result.estimates)
    result.per_class = {k: records[k]["evaluation"]["benchmark"]["per_class"]
                        for k in steps if "benchmark" in records[k]["evaluation"]}
    result.repeats = _repeats(records, steps, result.sets)
    result.anatomy = anatomy(records, steps)
    if conclude:
        criteria = criteria or verdict.Criteria()
        result.verdict = verdict.decide(result, criteria)
        if step_files(Path(results_dir) / solver_check.FOLDER):
            verdict.apply_solver_check(result.verdict,
                                       solver_summary(result, criteria)["check"])
        result.findings = verdict.findings(result)
    return result


def _progression(k, r):
    """One step's row of the training progression."""
    return {"step": k, "name": r["name"], "n": r["n_training_samples"],
            "af": r.get("n_training_af"), "breakdown": r["training_breakdown"],
            "cv_mean": r["cv_auroc_mean"], "cv_std": r["cv_auroc_std"],
            "train_accuracy": r["train_accuracy"], "converged": r["converged"],
            "n_nonzero": r.get("n_nonzero_weights"), "n_iter": r.get("n_iter")}


def _set_analysis(name, result):
    """One eval set: its metrics per step with intervals, the paired step-to-step changes of
    the sweep's chain (per comparison; Holm comes after), the first-to-last change; its
    estimates go into result.estimates."""
    records, scores = result.records, result.scores
    main_steps = [k for k in result.steps if k in common.STEP_BY_NUMBER]
    present = [k for k in result.steps if name in records[k]["evaluation"]]
    entry0 = records[present[0]]["evaluation"][name]
    kind = "two-class" if entry0.get("auroc") is not None else "single-class"
    metrics = TWO_CLASS_METRICS if kind == "two-class" else ONE_CLASS_METRICS
    rows, ests = _set_rows(name, present, records, scores, metrics)
    metrics = [m for m in metrics if any(m in ests[k] for k in present)]
    for k in present:
        result.estimates[(k, name)] = ests[k]
    chain = [k for k in present if k in main_steps]
    deltas = {}
    for a, b in zip(chain, chain[1:]):
        deltas[b] = {m: dict(intervals.change(ests[a][m], ests[b][m],
                                              paired=_paired(scores, a, b, name)),
                             step_from=a)
                     for m in metrics if m in ests[a] and m in ests[b]}
        for m, d in deltas[b].items():
            d["verdict"] = intervals.call(d["delta"], d["p_value"], ALPHA)
            d["calls"] = "per comparison"
    head = metrics[0] if metrics else None
    overall = None
    if head and len(chain) > 1 and head in ests[chain[0]] and head in ests[chain[-1]]:
        overall = dict(intervals.change(ests[chain[0]][head], ests[chain[-1]][head],
                                        paired=_paired(scores, chain[0], chain[-1], name)),
                       step_from=chain[0], step_to=chain[-1])
        overall["verdict"] = intervals.call(overall["delta"], overall["p_value"], ALPHA)
    title, role = set_info(name)
    return {"kind": kind, "title": title, "role": role, "metrics": metrics,
            "headline": head, "rows": rows, "deltas": deltas, "inflection": None,
            "overall": overall, "reference": entry0.get("reference_negatives"),
            "auroc_note": entry0.get("auroc_note"),
            "confounded_from": (confounded_from(name, main_steps, records)
                                if kind == "single-class" else None)}


def _check_same_run(records, results_dir):
    """Raise when steps differ in config, inputs or data source."""
    items = sorted(records.items())
    k0, r0 = items[0]
    for k, r in items[1:]:
        for key in ("data_source", "layer"):
            if r.get(key) != r0.get(key):
                raise base.InputError(f"{results_dir}: step {k} and step {k0} differ in "
                                      f"'{key}' ({r.get(key)!r} vs {r0.get(key)!r}); "
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


def _short(value, width=40):
    """repr of a value, cut to width characters."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def set_info(name):
    """(title, role) of an eval set, also for extra eval sets not in this process's table."""
    spec = common.DATASETS.get(name)
    if spec is None:
        return f"{name} (extra eval set)", "extra"
    role = {"scratchpad": "in-distribution", "ood": "OOD"}.get(spec.regime, "extra")
    return spec.title, role


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
        d["verdict"] = intervals.call(d["delta"], p, ALPHA)
        d["calls"] = f"Holm over {len(family)}"
    for s in sets.values():
        gains = [(d[s["headline"]]["delta"], b) for b, d in s["deltas"].items()
                 if s["headline"] in d and d[s["headline"]]["verdict"] == "improved"]
        s["inflection"] = max(gains)[1] if gains else None
    return len(family)


# --------------------------------------------------------------------------------------------
# Files and folders of the controls
# --------------------------------------------------------------------------------------------
def orderings_summary(results_dir, main=None, allow_mixed=False):
    """Per ordering of the OOD sources: where the largest significant gain on each OOD set is
    (orderings not computed from the main sweep's run are left out, see linked)."""
    root = Path(results_dir) / "orderings"
    if not root.is_dir():
        return {}
    out = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and step_files(p)):
        order = analyze_folder(folder, conclude=False)
        if main is None or linked(main, order, folder, allow_mixed):
            out[folder.name] = controls_analysis.ordering_row(folder.name.split("-"), order)
    return out


def transfer_summary(results_dir, main=None, allow_mixed=False):
    """The transfer matrix JSON, if present (checked: results_read.read_transfer) and
    computed from the main sweep's run (see linked)."""
    path = Path(results_dir) / "transfer_matrix.json"
    doc = results_read.read_transfer(path)
    if doc is None or main is None or linked(main, doc, path, allow_mixed):
        return doc
    return None


GRID_KEYS = {"layer", "C", "penalty", "cache_dir"}      # what a grid cell changes on purpose


def grid_summary(results_dir, main=None, allow_mixed=False):
    """The grid summary JSON, if present (checked: results_read.read_grid), with only the cells
    whose folder still holds the numbers the summary shows (a cell rerun, removed or edited
    since the summary was written is left out with a warning) and, given the main sweep's
    Analysis, that come from its run (same data source and config but for layer, C and
    penalty; at the main sweep's layer, the same input files): one rule with the controls."""
    path = Path(results_dir) / "grid_summary.json"
    doc = results_read.read_grid(path)
    if doc is None:
        return None
    kept = []
    for cell in doc["cells"]:
        why = _grid_cell_stale(Path(results_dir), cell)
        if why is None and main is not None and not allow_mixed:
            why = _grid_cell_foreign(main, Path(results_dir) / cell["path"])
        if why:
            print(f"warning: {path}: cell {cell['path']}: {why}; not shown", file=sys.stderr)
        else:
            kept.append(cell)
    return {**doc, "cells": kept}


def _grid_cell_stale(results_dir, cell):
    """Why a grid summary's cell no longer matches its folder's last step, or None."""
    folder = (results_dir / cell["path"]).resolve()
    if results_dir.resolve() not in folder.parents:
        return "its path leaves the results folder"
    files = step_files(folder)
    if not files:
        return "its folder has no step files"
    record = results_read.read_json(files[max(files)], "step record")
    shown = (cell["cv_auroc"], cell["n_nonzero_weights"])
    if not isinstance(record, dict) or (record.get("cv_auroc_mean"),
                                        record.get("n_nonzero_weights")) != shown:
        return "its folder holds other results than the summary (rerun with the grid flags)"
    return None


def _grid_cell_foreign(main, folder):
    """Why a grid cell's last step record is not from the main sweep's run, or None."""
    files = step_files(folder)
    record = results_read.read_json(files[max(files)], "step record")
    if record.get("data_source") != main.data_source:
        return (f"its data_source is {record.get('data_source')!r}, the main sweep's "
                f"{main.data_source!r}")
    c0, c = config.comparable(main.config), config.comparable(record.get("config") or {})
    keys = sorted(k for k in set(c0) | set(c) if k not in GRID_KEYS and c0.get(k) != c.get(k))
    if keys:
        return (f"its config '{keys[0]}' is {_short(c.get(keys[0]))}, the main sweep's "
                f"{_short(c0.get(keys[0]))} (not from the main sweep's run)")
    same_layer = record.get("layer") == main.layer
    if same_layer and _by_name(record.get("inputs") or {}) != _by_name(main.inputs):
        return "it was computed from other input files than the main sweep (not from its run)"
    return None


def solver_summary(result, criteria=None):
    """Per step: the final fit's solver record and its CV folds' median gap; with the
    --solver-check control present, its comparison (controls_analysis; the tight fits'
    verdict drawn with the same criteria). Made once, kept in result.solver."""
    if result.solver is not None:
        return result.solver
    steps = {}
    for k in result.steps:
        rec = result.records[k].get("solver")
        if not rec:
            continue
        folds = [f for f in rec["cv_folds"] if "relative_gap" in f]
        steps[k] = {"final": rec["final"],
                    "cv_n_iter": [f["n_iter"] for f in rec["cv_folds"]],
                    "cv_relative_gap": (statistics.median(f["relative_gap"] for f in folds)
                                        if folds else None)}
    path = Path(result.results_dir) / solver_check.FOLDER
    tight = analyze(path, controls=False, criteria=criteria) if step_files(path) else None
    check = (controls_analysis.solver_check_comparison(result, tight, steps)
             if tight is not None and linked(result, tight, path) else None)
    result.solver = {"steps": steps, "tol": result.config.get("tol"), "check": check}
    return result.solver


# --------------------------------------------------------------------------------------------
# Across steps: generalization gap, repeats, probe anatomy
# --------------------------------------------------------------------------------------------
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
