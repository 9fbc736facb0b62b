"""Write an offline, interactive results dashboard: one self-contained HTML file.

    python generate_report.py --format html [--results-dir DIR] [--output PATH] [--allow-mixed]
    python -m sweeplib.dashboard [--results-dir DIR] [--output PATH]    # the same, alone

The page embeds its data as JSON and draws everything with plain JavaScript and inline SVG (no
library, font or network access), so it opens offline in any current browser:
  - the chosen metric per step for every eval set, 95 % CIs as bands;
  - per-sample score distributions per step and eval set (binned log-odds, AF vs not AF);
  - the benchmark's per-class flagged fractions per step;
  - every results folder below --results-dir holding step files (a "cell": the main sweep,
    arm_budget/, grid/..., orderings/...), one shown or two compared side by side;
  - the transfer matrix as a heatmap when <results-dir>/transfer_matrix.json exists.
The view state lives in the URL fragment, e.g. #metric=recall_at_fpr_5&cell=.&compare=arm_budget.
"""
from __future__ import annotations

import datetime
import json
import re
import sys
from pathlib import Path

import numpy as np

from sweeplib import analysis
from sweeplib import answer
import common
from sweeplib import results_io
from sweeplib import results_read
from sweeplib import answer_view, verdict
from sweeplib import base, ownership
from sweeplib import hints
from sweeplib import config
from sweeplib import metrics

TEMPLATES = Path(__file__).resolve().parent / "templates"     # dashboard.html, .css, .js
TRANSFER_FILE = "transfer_matrix.json"
N_BINS = 40
# metrics offered by the chooser, in menu order
METRICS = ("auroc", "auroc_vs_reference_negatives", "recall_at_fpr_1", "recall_at_fpr_5",
           "detection_rate", "accuracy")
AF_CLASSES = tuple(c for c, v in common.LABEL_MAP.items() if v == 1)
CONFIG_KEYS = ("C", "penalty", "seed", "repeats", "eval_fraction", "max_iter")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
def _natural_key(text):
    """Sort key that orders 'C_2' before 'C_10'."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text)]


def find_cells(results_dir):
    """Every folder under results_dir (itself included) holding step_<k>_<slug>.json files,
    as (label, folder) with label the relative path ('.' for results_dir itself)."""
    results_dir = Path(results_dir)
    folders = set()
    for path in results_dir.rglob("step_*_*.json"):
        rel = path.relative_to(results_dir)
        if (not any(p.startswith(".") for p in rel.parts)
                and results_read.scan(path.parent)[0]):
            folders.add(path.parent)
    cells = [(f.relative_to(results_dir).as_posix(), f) for f in folders]
    return sorted(cells, key=lambda c: (c[0] != ".", _natural_key(c[0])))


def histograms(per_step, n_bins=N_BINS):
    """Binned scores of one eval set, bins shared across steps so steps are comparable.

    per_step: {step: (score, label)}. The range spans the pooled 0.5-99.5 % quantiles and the
    decision boundary (score 0); scores outside it are counted in the end bins (and reported).
    """
    finite = {k: (s[np.isfinite(s)], y[np.isfinite(s)]) for k, (s, y) in per_step.items()}
    pooled = np.concatenate([s for s, _ in finite.values()]) if finite else np.zeros(0)
    if not len(pooled):
        return None
    lo, hi = (float(v) for v in np.quantile(pooled, [0.005, 0.995]))
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    edges = np.linspace(lo, hi, n_bins + 1)
    counts = {}
    for k, (s, y) in finite.items():
        entry = {"below": int(np.sum(s < lo)), "above": int(np.sum(s > hi))}
        for key, mask in (("af", y == 1), ("neg", y != 1)):
            entry[key] = np.histogram(np.clip(s[mask], lo, hi), edges)[0].tolist()
        counts[k] = entry
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts}


def _set_order(names):
    """Known eval sets in the dataset table's order, then any others alphabetically."""
    known = [n for n in common.EVAL_SETS if n in names]
    return known + sorted(n for n in names if n not in common.EVAL_SETS)


def cell_data(folder, label):
    """Everything the page shows about one results folder, read from its step files (a folder
    or step that cannot be read is skipped with a warning: results_read.load_folder)."""
    warnings = []
    records, scores = results_read.load_folder(folder, warn=warnings.append)
    steps = sorted(records)
    first = records[steps[0]] if steps else {}
    cfg = first.get("config") or {}
    out = {
        "label": label,
        "path": str(folder),
        "data_source": first.get("data_source"),
        "layer": first.get("layer"),
        "config": {k: cfg[k] for k in CONFIG_KEYS if k in cfg},
        "run_ids": sorted({str(r.get("run_id")) for r in records.values()}),
        "steps": [_step_data(k, records[k]) for k in steps], "sets": {}, "set_order": [],
        "warnings": warnings,
    }
    sources = {r.get("data_source") for r in records.values()}
    if len(out["run_ids"]) > 1:
        warnings.append(f"steps come from {len(out['run_ids'])} different runs "
                        f"({', '.join(out['run_ids'])})")
    if len(sources) > 1:
        warnings.append(f"steps differ in data source ({', '.join(sorted(map(str, sources)))})")
    out["set_order"] = _set_order({n for r in records.values() for n in r["evaluation"]})
    for name in out["set_order"]:
        out["sets"][name] = _set_data(name, records, scores)
    return out


def _step_data(k, r):
    """What the page shows about one step."""
    return {"step": k, "name": r["name"], "question": r.get("question"),
            "training_data": r.get("training_data"), "n_train": r.get("n_training_samples"),
            "cv_auroc": r.get("cv_auroc_mean"),
            "thresholds": (r.get("thresholds") or {}).get("log_odds") or {},
            "data_source": r.get("data_source")}


def _set_data(name, records, scores):
    """One eval set of a cell: metrics per step with CIs, per-class table, score histograms."""
    steps = sorted(records)
    present = [k for k in steps if name in records[k]["evaluation"]]
    entries = {k: records[k]["evaluation"][name] for k in present}
    two_class = any(e.get("auroc") is not None for e in entries.values())
    title, role = analysis.set_info(name)
    rows = {}
    for k, e in entries.items():
        flat, ci = metrics.flat_metrics(e), e.get("ci") or {}
        rows[k] = {m: {"value": flat.get(m), "ci": ci.get(m)} for m in METRICS}
        rows[k]["n"] = e.get("n_samples")
        rows[k]["af"] = e.get("af_samples")
    per_step = {k: (np.asarray(scores[k][name]["score"], dtype=np.float64),
                    np.asarray(scores[k][name]["label"]))
                for k in present if name in scores.get(k, {})}
    return {
        "title": title, "kind": "two-class" if two_class else "single-class", "role": role,
        "headline": next((m for m in metrics.HEADLINE_ORDER
                          if any(r[m]["value"] is not None for r in rows.values())), None),
        "reference": next((e.get("reference_negatives") for e in entries.values()
                           if e.get("reference_negatives")), None),
        "steps": present, "rows": rows,
        "confounded_from": None if two_class else analysis.confounded_from(
            name, [k for k in steps if k in common.STEP_BY_NUMBER], records),
        "per_class": {k: e["per_class"] for k, e in entries.items() if e.get("per_class")},
        "hist": histograms(per_step) if per_step else None}


def dashboard_data(results_dir, result=None):
    """The JSON the page embeds. `result` (analysis.analyze of results_dir) adds the verdict and
    findings of the main sweep."""
    results_dir = Path(results_dir)
    results_read.check_folder(results_dir)
    cells = find_cells(results_dir)
    if not cells:
        raise base.InputError(f"{results_dir}: no step results found (write them with "
                              f"{hints.command('run_all.py', '--results-dir', results_dir)} "
                              "and --cache-dir DIR or --demo)")
    summary, left_out = None, []
    if result is not None:                       # one rule with the console and the report
        summary = {"verdict": result.verdict, "findings": result.findings,
                   "data_source": result.data_source,
                   "methods": answer_view.dashboard_data(result),
                   "answer": answer.render_answer(answer.answer(result))}
        keep = analysis.run_folders(result)
        left_out = [label for label, _ in cells if label not in keep]
        cells = [(label, folder) for label, folder in cells if label in keep]
    data = {
        "title": f"Distribution sweep - {results_dir.resolve().name}",
        "results_dir": str(results_dir),
        "generated": datetime.datetime.now().isoformat(timespec="seconds"),
        "metrics": [{"key": m, "label": common.METRIC_LABELS[m],
                     "short": common.SHORT_METRIC_LABELS[m]} for m in METRICS],
        "af_classes": list(AF_CLASSES),
        "summary": summary,
        "cell_order": [label for label, _ in cells],
        "cells": {label: cell_data(folder, label) for label, folder in cells},
        "transfer": (results_read.read_transfer(results_dir / TRANSFER_FILE) if result is None
                     else result.transfer),
    }
    if result is not None and "." in data["cells"]:
        data["cells"]["."]["warnings"] += [
            f"{label}/: not from the main sweep's run; not shown (rerun the control, or pass "
            "--allow-mixed)" for label in left_out]
        if result.transfer is None and (results_dir / TRANSFER_FILE).exists():
            data["cells"]["."]["warnings"].append(
                f"{TRANSFER_FILE}: not from the main sweep's run; not shown")
    return base.json_safe(data)


def render_html(data):
    """The page: the template with its style and script inlined and the data embedded as JSON
    (every '<' escaped, so no tag can close): one self-contained, offline file."""
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    page = (_template("dashboard.html").replace("__CSS__", _template("dashboard.css"))
            .replace("__JS__", _template("dashboard.js") + "\n" + _template("methods.js")))
    page = page.replace("__TITLE__", _escape(base.printable(data["title"])))
    return page.replace("__DATA__", blob)


def _template(name):
    """A file of the template folder (package data, found next to this module)."""
    return (TEMPLATES / name).read_text(encoding="utf-8")


def _escape(text):
    """Minimal HTML escaping for text content."""
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def write_dashboard(results_dir, output=None, result=None, allow_mixed=False, criteria=None):
    """Write <results_dir>/dashboard.html (or output) atomically; return its path.

    result: a precomputed analysis.analyze(results_dir); computed here when results_dir itself
    holds step files and result is None.
    """
    results_dir = Path(results_dir)
    if output is None:
        ownership.check_ownership(results_dir, derived_only=True)
    if result is None and results_read.scan(results_dir)[0]:
        result = analysis.analyze(results_dir, allow_mixed, criteria=criteria)
    html = render_html(dashboard_data(results_dir, result))
    output = Path(output) if output else results_dir / "dashboard.html"
    if not output.parent.is_dir():
        raise base.InputError(f"{output}: its folder does not exist")
    ownership.write_owned(output, html.encode("utf-8"))
    return output


def main(argv=None):
    """CLI entry point; exit 0 on success, 2 on bad input."""
    p = config.results_parser(__doc__)
    p.add_argument("--output", type=config.output_path, default=None,
                   help="HTML path (default <results-dir>/dashboard.html)")
    args = p.parse_args(argv)

    def body():
        """Write the dashboard."""
        path = write_dashboard(args.results_dir, args.output, allow_mixed=args.allow_mixed,
                               criteria=verdict.Criteria.from_args(args))
        print(f"wrote {path}")
        return 0
    return results_io.run_cli(body)

if __name__ == "__main__":
    sys.exit(main())
