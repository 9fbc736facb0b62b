"""What run_all.py does once its flags are parsed: the sweep and its controls in one process,
then the comparison, the report, verdict.json, the dashboard and (with --figures) the figures.

    run(cfg, Request.from_args(args))   # inside results_io.run_cli: InputError -> exit 2
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import common
from sweeplib import (analysis, base, controls, execution, methods, methods_run, outputs,
                      pipeline, results_io, results_read, verdict)
from sweeplib.report import grid_table, render_console, transfer_table


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
    if not cfg.quiet:
        sys.stdout.write(render_console(result))
    if req.compare_only:                 # a reader: prints the comparison, writes nothing
        return 0
    with base.timed("report, figures, dashboard"):
        written = outputs.write_outputs(results_dir, result, figures=req.figures)
    log = pipeline.quiet_log(cfg.quiet)
    log("\nwrote " + ", ".join(str(p) for p in written))
    if not req.figures:
        log(f"figures: python generate_report.py --results-dir {results_dir} "
            "(or run_all.py --figures)")
    return 0


def _grid(cfg, req, results_dir):
    """A grid: every (layer, C, penalty) cell in its own folder, or (--compare-only) the
    summary of an earlier grid; the main sweep's files stay as they are."""
    if req.compare_only:
        rows = (analysis.grid_summary(results_dir) or {}).get("cells")
        if not rows:
            raise base.InputError(f"{results_dir}/grid_summary.json: no grid results")
        print(grid_table(rows))
        return 0
    log = pipeline.quiet_log(cfg.quiet)
    steps = [common.step_spec(k) for k in req.steps]
    results_io.claim(results_dir)
    with execution.context(cfg):
        rows = controls.run_grid(cfg, steps, results_dir, req.resume)
    results_io.commit_all(derived=False)      # the main sweep's files stay as they are
    log(grid_table(rows))
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
            log(transfer_table(doc) + f"\nwrote {path}")
        if req.solver_check:
            controls.run_solver_check(ctx, steps, results_dir, cfg, req.solver_check, req.resume)
    results_io.commit_all()            # every folder of the run switched in together
