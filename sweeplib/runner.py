"""What run_all.py does once its flags are parsed: the sweep and its controls in one process,
then the comparison, the report, verdict.json, the dashboard and (with --figures) the figures.

    run(cfg, Request.from_args(args))   # inside results_io.run_cli: InputError -> exit 2
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import common
from sweeplib import (analysis, base, controls, execution, methods, methods_run, outputs,
                      pipeline, results_io, results_read, verdict)
from sweeplib import answer, hints, metrics
from sweeplib.config import RunConfig, build_parser, check_single_values
from sweeplib.render import Table, fmt, render_table_text, wrap
from sweeplib import report
from sweeplib.report import render_console


@dataclass(frozen=True)
class Request:
    """What run_all.py is asked to do besides the run's configuration (config.RunConfig)."""
    steps: tuple                       # step numbers
    resume: bool = False
    compare_only: bool = False
    figures: bool = False
    budget: str | None = None          # a sample count or "base"
    baseline: str | None = None        # "format"
    orderings: str | None = None       # "all"
    transfer: bool = False
    solver_check: float | None = None  # the tight tolerance
    criteria: verdict.Criteria = verdict.Criteria()
    methods: tuple = (methods.REFERENCE,)   # method arms (methods.py); the reference alone: none

    @classmethod
    def from_args(cls, args):
        """The request run_all.py's flags make."""
        return cls(tuple(sorted(set(args.steps))), args.resume, args.compare_only, args.figures,
                   args.budget, args.baseline, args.orderings, args.transfer,
                   args.solver_check, verdict.Criteria.from_args(args),
                   tuple(methods.parse_methods(args.methods)))


def run(cfg, req):
    """Run what the flags ask for; InputError on bad input."""
    results_dir = cfg.results_dir
    if cfg.is_grid:
        return _grid(cfg, req, results_dir)
    if not req.compare_only:
        _sweep_and_controls(cfg, req, results_dir)
    with base.timed("analysis"):
        result = analysis.analyze(results_dir, criteria=req.criteria)
    sys.stdout.write(answer.render_answer(answer.answer(result)) if cfg.quiet
                     else render_console(result))
    if req.compare_only:                 # a reader: prints the comparison, writes nothing
        return 0
    with base.timed("report, figures, dashboard"):
        written = outputs.write_outputs(results_dir, result, figures=req.figures)
    log = pipeline.quiet_log(cfg.quiet)
    log("\nwrote " + ", ".join(str(p) for p in written))
    if not req.figures:
        log("figures: " + hints.command("generate_report.py", "--results-dir",
                                        Path(results_dir)) + " (or run_all.py --figures)")
    return 0


def _grid(cfg, req, results_dir):
    """A grid: every (layer, C, penalty) cell in its own folder, or (--compare-only) the
    summary of an earlier grid; the main sweep's files stay as they are."""
    if req.compare_only:
        rows = (analysis.grid_summary(results_dir) or {}).get("cells")
        if not rows:
            raise base.InputError(f"{results_dir}/grid_summary.json: no grid results")
        print(grid_table(rows, results_dir))
        return 0
    log = pipeline.quiet_log(cfg.quiet)
    steps = [common.step_spec(k) for k in req.steps]
    results_io.claim(results_dir)
    with execution.context(cfg):
        rows = controls.run_grid(cfg, steps, results_dir, req.resume)
    results_io.commit_all(derived=False)      # the main sweep's files stay as they are
    log(grid_table(rows, results_dir))
    log(f"\nwrote {results_dir / 'grid_summary.json'} (main sweep untouched)")
    return 0


def _sweep_and_controls(cfg, req, results_dir):
    """The sweep's steps and every control asked for, switched in together."""
    log = pipeline.quiet_log(cfg.quiet)
    steps = [common.step_spec(k) for k in req.steps]
    results_io.claim(results_dir)
    # the orderings train on every source, whatever --steps asks for
    with execution.context(cfg), pipeline.prepare(
            cfg, steps + ([common.STEPS[-1]] if req.orderings else [])) as ctx:
        cfg = ctx.cfg
        if req.budget:
            controls.check_budget(ctx, steps, req.budget)
        rewritten = {"arm_budget": req.budget, "baseline_format": req.baseline,
                     "orderings": req.orderings, "transfer": req.transfer}
        results_read.check_controls(results_dir, [k for k, v in rewritten.items() if v])
        records = pipeline.run_steps(ctx, steps, results_dir, cfg, req.resume)
        if len(req.methods) > 1:
            methods_run.run(ctx, req.methods, steps, results_dir, cfg, records)
        if req.budget:
            controls.run_budget_arm(ctx, steps, results_dir, cfg, req.budget, req.resume)
        if req.baseline == "format":
            controls.run_format_baseline(ctx, steps, results_dir, cfg, req.resume)
        if req.orderings:
            controls.run_orderings(ctx, results_dir, cfg, req.resume)
        if req.transfer:
            doc, path = controls.run_transfer(ctx, results_dir, cfg)
            log(render_table_text(report.transfer_table(doc)) + f"\n\nwrote {path}")
        if req.solver_check:
            controls.run_solver_check(ctx, steps, results_dir, cfg, req.solver_check, req.resume)
    results_io.commit_all()            # every folder of the run switched in together


def main_step(number, argv=None):
    """Entry point of a numbered step script: run that step alone, then write again, from the
    folder's step files, the derived outputs (report, dashboard, verdict, figures) that its
    switch removed as stale."""
    step = common.step_spec(number)
    args = build_parser(f"Step {number} ({step.slug}): {step.question}").parse_args(argv)

    def body():
        """Run the step; commit; refresh what went stale."""
        check_single_values(args)
        cfg = RunConfig.from_args(args)
        results_io.claim(cfg.results_dir)
        pipeline.run_sweep(cfg, [number])
        results_io.commit_all()
        refresh_outputs(cfg.results_dir, results_io.removed_outputs(), cfg.quiet)
        return 0
    return results_io.run_cli(body)


def refresh_outputs(results_dir, removed, quiet=False):
    """Write again the derived outputs in `removed` (paths in results_dir) from the folder as
    it now is: the same formats, the figures only if some were there (about 0.1 s without)."""
    names = {Path(p).name for p in removed if Path(p).parent == Path(results_dir)}
    if not names:
        return []
    formats = [f for f in ("txt", "md", "csv") if f"report.{f}" in names]
    formats += ["html"] if "dashboard.html" in names else []
    figures = any(n.endswith(".png") for n in names)
    written = outputs.write_outputs(results_dir, analysis.analyze(results_dir),
                                    formats=tuple(formats), figures=figures)
    pipeline.quiet_log(quiet)("refreshed from the folder's steps: "
                              + ", ".join(str(p) for p in written))
    return written


def grid_table(rows, results_dir=None):
    """The grid's cells: CV AUROC, weights, each eval set's headline metric at the cell's last
    step (named), and, for cells that hold a sweep, the answer of that cell (its verdict)."""
    sets = list(dict.fromkeys(n for r in rows for n in r["metrics"]))
    head = {n: metrics.headline_metric(next(r["metrics"][n] for r in rows if n in r["metrics"]))
            for n in sets}
    answers = [_cell_outcome(Path(results_dir) / r["path"]) if results_dir else "" for r in rows]
    t = Table(["layer", "C", "penalty", "step", "CV AUROC", "non-zero w"] + sets
              + (["answer"] if any(answers) else []),
              [[str(r["layer"]), f"{r['C']:g}", r["penalty"], str(r.get("last_step", "")),
                f"{r['cv_auroc']:.3f}", str(r["n_nonzero_weights"])]
               + [fmt(r["metrics"].get(n, {}).get(head[n])) for n in sets]
               + ([a] if any(answers) else []) for r, a in zip(rows, answers)],
              right=set(range(3, 6 + len(sets))))
    legend = ("step: the cell's last step, where the metrics are taken; per eval set its "
              "headline metric: " + ", ".join(f"{n} {common.METRIC_LABELS.get(head[n], 'n/a')}"
                                              for n in sets)
              + (" (no intervals here: each cell's report has them); answer: the cell's "
                 "verdict." if any(answers) else "."))
    return render_table_text(t) + "\n\n" + wrap(legend)


def _cell_outcome(folder):
    """The verdict outcome of a grid cell's folder ('' when it holds no sweep to answer)."""
    try:
        v = analysis.analyze(folder, controls=False).verdict
    except base.InputError:
        return ""
    return v["outcome"] if v else ""
