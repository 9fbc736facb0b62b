"""The answer and the method x step tables, as data (dashboard), text blocks (report and
console) and a figure (--figures): one table per intent-measuring OOD set, one row per method
arm, one column per step: AUROC with its interval and the paired change vs the reference at
the same step.

    blocks = answer_blocks(result)     # the answer sentence first, then the tables
"""
from __future__ import annotations

from sweeplib import cause, intervals
from sweeplib.render import Table, fmt

FIGURE = "methods.png"


def table_sets(result):
    """The intent-measuring OOD sets (the verdict's), else every two-class OOD set."""
    v = result.verdict or {}
    used = v.get("sets_used") or []
    return used or [n for n, s in result.sets.items()
                    if s["role"] in ("OOD", "extra") and s["kind"] == "two-class"]


def method_tables(result):
    """{set: [{method, transductive, cells: {step: {value, ci, delta, delta_ci, p_value}}}]}
    (delta vs the reference at the same step, paired, per comparison)."""
    mr = result.methods
    if mr is None:
        return {}
    out = {}
    for name in table_sets(result):
        rows = []
        for arm in mr.arms:
            cells = {}
            for k in result.steps:
                est = cause.estimate(result, mr, arm, k, name)
                if est is None:
                    continue
                cell = {"value": est.value, "ci": intervals.interval(est)}
                ref = cause.estimate(result, mr, mr.arms[0], k, name)
                if arm != mr.arms[0] and ref is not None:
                    d = intervals.change(ref, est, paired=True)
                    cell.update(delta=d["delta"], delta_ci=d["ci"], p_value=d["p_value"])
                cells[k] = cell
            if cells:
                rows.append({"method": arm, "transductive": arm in mr.transductive,
                             "cells": cells})
        out[name] = rows
    return out


def _delta(c):
    """'+0.100 [+0.020, +0.180]' or ''."""
    if not c or "delta" not in c:
        return ""
    return f"{c['delta']:+.3f} [{c['delta_ci'][0]:+.3f}, {c['delta_ci'][1]:+.3f}]"


def answer_blocks(result):
    """The report's and console's first blocks of the verdict section: the answer in one
    sentence, then one method x step table per intent-measuring OOD set."""
    v = result.verdict or {}
    if "answer" not in v:
        return []
    blocks = [f"ANSWER: {v['answer']} - {v['answer_evidence']['sentence']}"]
    tables = method_tables(result)
    for name, rows in tables.items():
        blocks.append(f"{name}: AUROC by method and step [95% interval]; 'vs lr': the change "
                      "vs the reference at the same step (paired, per comparison; the answer's "
                      "test is Holm-adjusted); * transductive: uses unlabelled eval rows")
        lines = []
        for r in rows:
            for i, k in enumerate(sorted(r["cells"])):
                c = r["cells"][k]
                lines.append([r["method"] + ("*" if r["transductive"] else "") if i == 0 else "",
                              str(k), fmt(c["value"], c["ci"]), _delta(c)])
        blocks.append(Table(["method", "step", "AUROC", "vs lr"], lines, right={1, 2, 3}))
    skipped = (result.methods.doc.get("skipped") if result.methods else None) or []
    if skipped:
        blocks.append("methods skipped: " + "; ".join(f"{s['name']} ({s['reason']})"
                                                      for s in skipped))
    return blocks


def dashboard_data(result):
    """What the dashboard embeds: the answer, its sentence and the method tables."""
    v = result.verdict or {}
    if "answer" not in v:
        return None
    tables = method_tables(result)
    return {"answer": v["answer"], "sentence": v["answer_evidence"]["sentence"],
            "tables": {n: [{**r, "cells": {str(k): c for k, c in r["cells"].items()}}
                           for r in rows] for n, rows in tables.items()}}


def methods_figure(result):
    """One panel per intent-measuring OOD set: AUROC of each method arm across the steps, with
    its interval (the reference drawn thick); None without method arms."""
    tables = method_tables(result)
    if not tables:
        return None
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(tables), figsize=(5.5 * len(tables), 4), squeeze=False)
    for ax, (name, rows) in zip(axes[0], tables.items()):
        for r in rows:
            ks = sorted(r["cells"])
            vals = [r["cells"][k]["value"] for k in ks]
            lo = [r["cells"][k]["value"] - r["cells"][k]["ci"][0] for k in ks]
            hi = [r["cells"][k]["ci"][1] - r["cells"][k]["value"] for k in ks]
            ref = r["method"] == result.methods.arms[0]
            ax.errorbar(ks, vals, yerr=[lo, hi], capsize=3, marker="o",
                        lw=2.5 if ref else 1.0, label=r["method"] + ("*" if r["transductive"]
                                                                      else ""))
        ax.set_xticks(sorted({k for r in rows for k in r["cells"]}))
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("step")
        ax.set_ylabel(f"{name} AUROC")
        ax.set_ylim(0, 1)
        ax.set_title(f"{name}: method x step (* transductive)")
        if ax.get_legend_handles_labels()[0]:     # no arm measured on this set: no legend
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
