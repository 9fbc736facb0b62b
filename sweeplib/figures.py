"""Draw the sweep's figures as PNG files next to its results (no retraining, headless).

    python generate_report.py [--results-dir DIR]       # the report and the figures
    python run_all.py --figures ...                      # a run that draws them too
    python -m sweeplib.figures [--results-dir DIR] [--allow-mixed] [--quiet]   # figures only

Writes into the results folder:
  sweep.png                every eval set's headline metric per step, 95 % CIs; the fixed-budget
                           arm (<results-dir>/arm_budget/) dashed when present
  score_distributions.png  per-sample log-odds scores, rows = steps, columns = eval sets, AF vs
                           not AF, threshold (probability 0.5 = score 0) marked
  transfer_matrix.png      heatmap of <results-dir>/transfer_matrix.json, when that file exists

Every PNG is rendered in memory and written atomically; the same results give the same bytes.
Without matplotlib nothing is drawn: write_figures returns [] and HAVE_MATPLOTLIB is False.
"""
from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import numpy as np

import common
from sweeplib import analysis, answer_view
from sweeplib import results_io
from sweeplib import results_read
from sweeplib import ownership
from sweeplib import config

try:
    import matplotlib
    matplotlib.use("Agg")                   # headless, before anything touches pyplot
    import matplotlib.pyplot  # noqa: F401  (pyplot now bound to Agg for any later user)
    from matplotlib.figure import Figure    # figures are built without pyplot's global registry
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator
    import matplotlib.style
    HAVE_MATPLOTLIB = True
except ImportError:                         # pragma: no cover - exercised via monkeypatch
    HAVE_MATPLOTLIB = False

MISSING_NOTE = "note: matplotlib is not installed; no figures written (pip install matplotlib)"
SWEEP_FILE = "sweep.png"
SCORES_FILE = "score_distributions.png"
TRANSFER_FILE = "transfer_matrix.png"
METHODS_FILE = answer_view.FIGURE          # method x step, per intent-measuring OOD set
TRANSFER_JSON = "transfer_matrix.json"
ARM_DIR = "arm_budget"
DPI = 100
SCORE_CLIP = 20.0                           # |log-odds| beyond this is drawn at the edge
N_BINS = 30
AUROC_TYPE = ("auroc", "auroc_vs_reference_negatives")
ROLE_STYLE = {                              # in-distribution vs OOD: colour, marker, title tag
    "in-distribution": {"color": "#1f5fa8", "marker": "o", "tag": "[in-distribution]"},
    "OOD": {"color": "#d2691e", "marker": "s", "tag": "[OOD]"},
    "extra": {"color": "#d2691e", "marker": "s", "tag": "[extra]"},     # --extra-eval sets
}
AF_COLOR, NEG_COLOR, REF_COLOR, THRESH_COLOR = "#c0392b", "#2e86c1", "#555555", "#222222"
DEMO_TAG = "SYNTHETIC DEMO DATA"
STYLE = {"figure.dpi": DPI, "savefig.dpi": DPI, "font.size": 9, "axes.titlesize": 9,
         "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8,
         "svg.hashsalt": "figures", "path.simplify": True}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _title(result, text):
    """Figure title, flagged when the numbers come from the synthetic demo cache."""
    if result.data_source == "demo":
        return f"{DEMO_TAG}: {text}\n(numbers show how the tool behaves, not real findings)"
    return text


def _step_label(result, k, sep=" "):
    """'0 base' from the step record."""
    return f"{k}{sep}{result.records[k].get('name', '')}".strip()


def _metric_label(metric, reference=None):
    """Axis label of a headline metric; says so when it is not plain AUROC."""
    if metric is None:
        return "no headline metric"
    label = common.METRIC_LABELS.get(metric, metric)
    if metric == "auroc_vs_reference_negatives":
        return f"{label}\n(not plain AUROC: " + (f"{reference} negatives)" if reference
                                                   else "reference negatives)")
    if metric != "auroc":
        return f"{label}\n(not AUROC)"
    return label


def _png_bytes(fig):
    """Render a figure to PNG bytes with no time- or version-dependent metadata."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _save(fig, path):
    """Render and write atomically; return the path."""
    path = Path(path)
    ownership.write_owned(path, _png_bytes(fig))
    return path


def _layout(fig, nrows, ncols, left, right, top, bottom, wgap, hgap):
    """Place a subplot grid with margins and gaps in inches (fast, and stable from run to run)."""
    W, H = fig.get_size_inches()
    aw = (W - left - right - (ncols - 1) * wgap) / ncols
    ah = (H - top - bottom - (nrows - 1) * hgap) / nrows
    fig.subplots_adjust(left=left / W, right=1 - right / W, top=1 - top / H, bottom=bottom / H,
                        wspace=wgap / aw, hspace=hgap / ah)


def _load_step_scores(results_dir, result):
    """{step: {set: {score, label, class}}}: the scores the analysis read and verified."""
    return {k: result.scores.get(k, {}) for k in result.steps}


def _ci_pair(cell):
    """(lo, hi) of a row cell, or None."""
    ci = cell.get("ci") if cell else None
    if not ci or ci[0] is None or ci[1] is None:
        return None
    return float(ci[0]), float(ci[1])


def _analyze_arm(results_dir, allow_mixed=False, result=None):
    """The analysis of <results_dir>/arm_budget/ (from the analysis of results_dir, which reads
    it under the readers' one error policy), or None when there is no such arm."""
    if result is None or result.arms is None:
        result = analysis.analyze(results_dir, allow_mixed)
    arm = result.arms.get(ARM_DIR)
    return arm["analysis"] if arm else None


# --------------------------------------------------------------------------------------------
# Figure 1: headline metric per step
# --------------------------------------------------------------------------------------------
def _series(s, steps, metric):
    """(steps with a value, values, lower errors, upper errors) of one set's metric."""
    xs, ys, lo, hi = [], [], [], []
    for k in steps:
        cell = s["rows"].get(k, {}).get(metric)
        if not cell or cell.get("value") is None:
            continue
        v = float(cell["value"])
        ci = _ci_pair(cell) or (v, v)
        xs.append(k)
        ys.append(v)
        lo.append(max(0.0, v - ci[0]))
        hi.append(max(0.0, ci[1] - v))
    return xs, ys, lo, hi


def sweep_figure(result, arm=None):
    """One panel per eval set: headline metric per step with 95 % CI error bars."""
    names = list(result.sets)
    steps = sorted(set(result.steps) | set(arm.steps if arm else ()))
    labels = {k: _step_label(arm if (arm and k not in result.records) else result, k, "\n")
              for k in steps}
    ncols = 1 if len(names) == 1 else 2
    nrows = max(1, math.ceil(len(names) / ncols))
    fig = Figure(figsize=(5.4 * ncols + 0.4, 3.4 * nrows + 1.6))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    _layout(fig, nrows, ncols, left=0.9, right=0.2, top=0.85, bottom=0.75, wgap=1.0, hgap=0.85)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        _sweep_panel(ax, result, name, arm, steps, labels)
    roles = ["in-distribution", "OOD"] + (["extra"] if any(
        s["role"] == "extra" for s in result.sets.values()) else [])
    handles = [Line2D([], [], color=ROLE_STYLE[r]["color"], marker=ROLE_STYLE[r]["marker"],
                      label=f"{r} eval set") for r in roles]
    if arm:
        handles.append(Line2D([], [], color="black", marker="o", mfc="white", ls="--",
                              label="fixed budget"))
    handles.append(Line2D([], [], color="grey", ls=":", label="chance (0.5), AUROC-type metrics"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.suptitle(_title(result, "Headline metric per step (error bars: 95 % intervals)"))
    return fig


def _sweep_panel(ax, result, name, arm, steps, labels):
    """One eval set's panel of the sweep figure (the budget arm dashed next to it)."""
    pos = {k: i for i, k in enumerate(steps)}
    s = result.sets[name]
    st = ROLE_STYLE.get(s["role"], ROLE_STYLE["OOD"])
    metric = s["headline"]
    conf = s.get("confounded_from")
    ax.set_title(f"{name} {st['tag']}  ({s['kind']})"
                 + ("" if conf is None else f"\nconfounded by source from step {conf}"),
                 color=st["color"])
    ax.set_xticks(range(len(steps)), [labels[k] for k in steps])
    ax.set_xlim(-0.5, len(steps) - 0.5)
    ax.set_ylim(-0.02, 1.05)
    ax.set_ylabel(_metric_label(metric, s.get("reference")))
    ax.grid(axis="y", alpha=0.3)
    if metric is None:
        ax.text(0.5, 0.5, "no metric defined", transform=ax.transAxes, ha="center")
        return
    if metric in AUROC_TYPE:
        ax.axhline(0.5, color="grey", lw=1, ls=":", zorder=0)
    xs, ys, lo, hi = _series(s, result.steps, metric)
    if xs:
        ax.errorbar([pos[k] for k in xs], ys, yerr=[lo, hi], color=st["color"],
                    marker=st["marker"], ms=6, lw=1.6, capsize=4)
        for k, y in zip(xs, ys):
            ax.annotate(f"{y:.2f}", (pos[k], y), textcoords="offset points", xytext=(-7, 3),
                        ha="right", fontsize=7, color=st["color"],
                        bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none",
                              "pad": 0.5})
    missing = [k for k in result.steps if k not in xs]
    if missing:
        ax.text(0.01, 0.02, "undefined at step " + ", ".join(map(str, missing)),
                transform=ax.transAxes, fontsize=7, color="grey")
    if arm and name in arm.sets:
        axs, ays, alo, ahi = _series(arm.sets[name], arm.steps, metric)
        if axs:
            ax.errorbar([pos[k] + 0.12 for k in axs], ays, yerr=[alo, ahi], color=st["color"],
                        marker=st["marker"], mfc="white", ms=5, lw=1.3, ls="--", capsize=3,
                        alpha=0.85)


# --------------------------------------------------------------------------------------------
# Figure 2: score distributions
# --------------------------------------------------------------------------------------------
def _column_bins(values):
    """Shared bin edges of one column: covers every (clipped) score and the threshold 0."""
    v = np.concatenate(values) if values else np.zeros(0)
    lo = min(float(v.min()) if v.size else -1.0, 0.0)
    hi = max(float(v.max()) if v.size else 1.0, 0.0)
    pad = max(0.5, 0.03 * (hi - lo))
    return np.linspace(lo - pad, hi + pad, N_BINS + 1)


def _clip(x):
    """Scores as float64, clipped to +-SCORE_CLIP (drawn at the edge)."""
    return np.clip(np.asarray(x, dtype=np.float64), -SCORE_CLIP, SCORE_CLIP)


def _ref_negatives(result, scores, k, name):
    """Scores of the held-out negatives of a set's reference set at step k, or None."""
    ref = result.sets[name].get("reference")
    d = scores[k].get(ref) if ref else None
    return None if d is None else d["score"][d["label"] == 0]


def score_figure(result, scores):
    """Grid rows = steps, columns = eval sets: histograms of scores split by label."""
    names = list(result.sets)
    steps = result.steps
    bins = {}
    for name in names:
        vals = []
        for k in steps:
            if name in scores[k]:
                vals.append(_clip(scores[k][name]["score"]))
            r = _ref_negatives(result, scores, k, name)
            if r is not None:
                vals.append(_clip(r))
        bins[name] = _column_bins(vals)
    fig = Figure(figsize=(3.3 * len(names) + 0.8, 2.1 * len(steps) + 1.9))
    axes = fig.subplots(len(steps), len(names), squeeze=False)
    _layout(fig, len(steps), len(names), left=0.85, right=0.15, top=0.85, bottom=1.0, wgap=0.5,
            hgap=0.3)
    for i, k in enumerate(steps):
        for j, name in enumerate(names):
            _score_panel(axes[i, j], result, scores, k, name, bins[name],
                         (i == 0, j == 0, i == len(steps) - 1))
    handles = [Patch(color=AF_COLOR, alpha=0.55, label="AF"),
               Patch(color=NEG_COLOR, alpha=0.55, label="not AF"),
               Line2D([], [], color=REF_COLOR, ls=":", label="reference negatives "
                      "(single-class sets)"),
               Line2D([], [], color=THRESH_COLOR, ls="--", label="threshold: probability 0.5 "
                      "(score 0)")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.suptitle(_title(result, "Per-sample probe scores by step and eval set "
                           "(bins shared within a column)"))
    return fig


def _score_panel(ax, result, scores, k, name, bins, edges):
    """One cell of the score grid: step k, eval set name (edges: first row, first column,
    last row: where the titles and axis labels go)."""
    s = result.sets[name]
    st = ROLE_STYLE.get(s["role"], ROLE_STYLE["OOD"])
    first_row, first_col, last_row = edges
    if first_row:
        ax.set_title(f"{name} {st['tag']}", color=st["color"])
    if first_col:
        ax.set_ylabel(f"step {_step_label(result, k, chr(10))}\ncount")
    if last_row:
        ax.set_xlabel(f"log-odds score\n(clipped to ±{SCORE_CLIP:g})")
    ax.set_xlim(bins[0], bins[-1])
    ax.axvline(0.0, color=THRESH_COLOR, ls="--", lw=1)
    d = scores[k].get(name)
    if d is None:
        ax.text(0.5, 0.5, "not evaluated", transform=ax.transAxes, ha="center", color="grey")
        return
    sc, y = _clip(d["score"]), np.asarray(d["label"])
    notes = []
    for lab, color, text in ((0, NEG_COLOR, "not AF"), (1, AF_COLOR, "AF")):
        part = sc[y == lab]
        if part.size:
            ax.hist(part, bins=bins, histtype="stepfilled", color=color, alpha=0.55, label=text)
            notes.append(f"{text} ≥ 0: {int((part >= 0).sum())}/{part.size}")
    r = _ref_negatives(result, scores, k, name)
    if r is not None and r.size:
        ax.hist(_clip(r), bins=bins, histtype="step", color=REF_COLOR, ls=":", lw=1.2)
        notes.append(f"ref. neg. ({s['reference']}) ≥ 0: {int((r >= 0).sum())}/{r.size}")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, ax.get_ylim()[1] * (1.0 + 0.18 * len(notes)))   # room for the notes
    ax.text(0.02, 0.97, "\n".join(notes), transform=ax.transAxes, va="top", fontsize=7,
            bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})


# --------------------------------------------------------------------------------------------
# Figure 3: transfer matrix
# --------------------------------------------------------------------------------------------


def transfer_figure(result, transfer):
    """Heatmap: rows = training mixes, columns = eval sets, each cell's headline value
    (transfer: the checked transfer_matrix.json, results_read.read_transfer)."""
    mixes, evals, cells = transfer["train_mixes"], transfer["eval_sets"], transfer["cells"]
    vals = np.full((len(mixes), len(evals)), np.nan)
    heads = [[None] * len(evals) for _ in mixes]
    for i, mix in enumerate(mixes):
        for j, ev in enumerate(evals):
            c = (cells.get(mix) or {}).get(ev) or {}
            if c.get("value") is not None:
                vals[i, j] = float(c["value"])
            heads[i][j] = c.get("headline")
    col_head = []
    for j in range(len(evals)):
        found = [heads[i][j] for i in range(len(mixes)) if heads[i][j]]
        col_head.append(max(set(found), key=found.count) if found else None)
    short = common.SHORT_METRIC_LABELS
    fig = Figure(figsize=(1.7 * len(evals) + 3.6, 0.75 * len(mixes) + 2.4))
    ax = fig.subplots()
    _layout(fig, 1, 1, left=1.8, right=1.2, top=0.85, bottom=0.8, wgap=0, hgap=0)
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(vals), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(len(mixes)):
        for j in range(len(evals)):
            v = vals[i, j]
            text = "n/a" if np.isnan(v) else f"{v:.2f}"
            if heads[i][j] and heads[i][j] != col_head[j]:
                text += f"\n({short.get(heads[i][j], heads[i][j])})"
            dark = not np.isnan(v) and (v < 0.2 or v > 0.8)
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    ax.set_xticks(range(len(evals)),
                  [f"{ev}\n({short.get(h, h)})" if h else ev for ev, h in zip(evals, col_head)])
    ax.set_yticks(range(len(mixes)), mixes)
    ax.set_xlabel("eval set (headline metric)")
    ax.set_ylabel("training mix")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02,
                 label="headline metric (0.5 = chance for AUROC-type)")
    fig.suptitle(_title(result, "Transfer matrix: training mix x eval set"))
    return fig


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------
def write_figures(results_dir, result=None, allow_mixed=False, only=None):
    """Write every figure the results support (or those of them named in `only`); return their
    paths ([] without matplotlib)."""
    if not HAVE_MATPLOTLIB:
        return []
    want = (lambda name: only is None or name in only)              # noqa: E731
    results_dir = Path(results_dir)
    result = result or analysis.analyze(results_dir, allow_mixed)
    arm = _analyze_arm(results_dir, allow_mixed, result) if want(SWEEP_FILE) else None
    scores = _load_step_scores(results_dir, result) if want(SCORES_FILE) else None
    transfer = results_read.read_transfer(results_dir / TRANSFER_JSON)   # bad input fails first
    paths = []
    with matplotlib.style.context("default"), matplotlib.rc_context(STYLE):
        if want(SWEEP_FILE):
            paths.append(_save(sweep_figure(result, arm), results_dir / SWEEP_FILE))
        if want(SCORES_FILE):
            paths.append(_save(score_figure(result, scores), results_dir / SCORES_FILE))
        if transfer is not None and want(TRANSFER_FILE):
            paths.append(_save(transfer_figure(result, transfer), results_dir / TRANSFER_FILE))
        if result.methods is not None and want(METHODS_FILE):
            paths.append(_save(answer_view.methods_figure(result), results_dir / METHODS_FILE))
    return paths


def main(argv=None):
    """CLI entry point; exit 0 on success (also without matplotlib), 2 on bad input."""
    p = config.results_parser(__doc__, verdict_flags=False)
    p.add_argument("--quiet", action="store_true", help="print only warnings and errors")
    args = p.parse_args(argv)
    if not HAVE_MATPLOTLIB:
        print(MISSING_NOTE, file=sys.stderr)
        return 0

    def body():
        """Write the figures."""
        for path in write_figures(args.results_dir, allow_mixed=args.allow_mixed):
            if not args.quiet:
                print(f"wrote {path}")
        return 0
    return results_io.run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
