"""What run_all.py does once its flags are parsed: the sweep and its controls in one process,
then the comparison, the report, verdict.json, the dashboard and (with --figures) the figures.

    run(args)         # inside results_io.run_cli: InputError -> one line, exit 2
"""
from __future__ import annotations

import sys

import common
from sweeplib import (analysis, base, controls, data, execution, outputs, pipeline, results_io,
                      results_read, verdict)
from sweeplib.config import resolve_paths
from sweeplib.report import grid_table, render_console, transfer_table


def run(args):
    """The run inside one results-folder session; with --figures, matplotlib is imported and
    the figures drawn in a separate process meanwhile."""
    figure_job = None
    try:
        with data.extra_evals(args.extra_eval):
            if args.figures and not args.compare_only:
                figure_job = outputs.start_figures()
            return _run(args, figure_job)
    finally:
        if figure_job is not None:
            figure_job.close()


def _run(args, figure_job=None):
    """Run what the flags ask for; InputError on bad input."""
    _, results_dir = resolve_paths(args)
    grid = len(args.C) > 1 or len(args.penalty) > 1 or bool(args.layers)
    if grid:
        return _grid(args, results_dir)
    if not args.compare_only:
        _sweep_and_controls(args, results_dir)
    with base.timed("analysis"):
        a = analysis.analyze(results_dir, criteria=verdict.Criteria.from_args(args))
    if not args.quiet:
        sys.stdout.write(render_console(a))
    with base.timed("report, figures, dashboard"):
        written = outputs.write_outputs(results_dir, a=a, figure_job=figure_job,
                                        figures=args.figures)
    log = pipeline.quiet_log(args)
    log("\nwrote " + ", ".join(str(p) for p in written))
    if not args.figures:
        log(f"figures: python generate_report.py --results-dir {results_dir} "
            "(or run_all.py --figures)")
    return 0


def _grid(args, results_dir):
    """A grid: every (layer, C, penalty) cell in its own folder, or (--compare-only) the
    summary of an earlier grid; the main sweep's files stay as they are."""
    if args.compare_only:
        rows = (analysis.grid_summary(results_dir) or {}).get("cells")
        if not rows:
            raise base.InputError(f"{results_dir}/grid_summary.json: no grid results")
        print(grid_table(rows))
        return 0
    log = pipeline.quiet_log(args)
    steps = [common.step_spec(k) for k in sorted(set(args.steps))]
    results_io.claim(results_dir)
    with execution.context(args):
        rows = controls.run_grid(args, steps, results_dir, args.resume)
    results_io.commit_all(derived=False)      # the main sweep's files stay as they are
    log(grid_table(rows))
    log(f"\nwrote {results_dir / 'grid_summary.json'} (main sweep untouched)")
    return 0


def _sweep_and_controls(args, results_dir):
    """The sweep's steps and every control asked for, switched in together."""
    log = pipeline.quiet_log(args)
    steps = [common.step_spec(k) for k in sorted(set(args.steps))]
    results_io.claim(results_dir)
    with execution.context(args):
        # the orderings train on every source, whatever --steps asks for
        ctx = pipeline.prepare(args, steps + ([common.STEPS[-1]] if args.orderings else []))
        config = pipeline.make_config(args, ctx.cache_dir, ctx.feature_ids)
        if args.budget:
            controls.check_budget(ctx, steps, args.budget)
        rewritten = {"arm_budget": args.budget, "baseline_format": args.baseline,
                     "orderings": args.orderings, "transfer": args.transfer}
        results_read.check_controls(results_dir, [k for k, v in rewritten.items() if v])
        pipeline.run_steps(ctx, steps, results_dir, config, args.resume)
        if args.budget:
            controls.run_budget_arm(ctx, steps, results_dir, config, args.budget, args.resume)
        if args.baseline == "format":
            controls.run_format_baseline(ctx, steps, results_dir, config, args.resume)
        if args.orderings:
            controls.run_orderings(ctx, results_dir, config, args.resume)
        if args.transfer:
            doc, path = controls.run_transfer(ctx, results_dir, config)
            log(transfer_table(doc) + f"\nwrote {path}")
        if args.solver_check:
            controls.run_solver_check(ctx, steps, results_dir, config, args.solver_check,
                                      args.resume)
    results_io.commit_all()            # every folder of the run switched in together
