"""Run the distribution sweep: every step in one process (each dataset loaded once, all probes
fitted together in lockstep), then the comparison, the report and the dashboard (figures with
--figures).

    python run_all.py --demo                    # synthetic demo cache -> results/demo/
    python run_all.py --cache-dir DIR           # real cache -> results/distribution_sweep/
    python run_all.py --steps 0 1 --resume      # some steps; skip those already up to date
    python run_all.py --compare-only            # print the comparison of existing results

Controls (each writes into its own subfolder or file of the results folder):
    --budget N|base        fixed-budget arm: every step trains on exactly N samples (arm_budget/)
    --baseline format      the sweep with a format-statistics-only probe (baseline_format/)
    --orderings all        the 6 orders of adding the OOD sources (orderings/<order>/)
    --transfer             train on each source alone / all-but-one (transfer_matrix.json)
    --solver-check [TOL]   every step refitted at --tol TOL (1e-8): does the verdict depend on
                           where the solver stops? (solver_check/)
    --layers 16 31 40 53, -C 0.1 1 10, --penalty l1 l2
                           a grid: every cell in grid/layer_<L>/C_<C>/penalty_<p>/
"""
from __future__ import annotations

import argparse
import sys

from sweeplib import analysis
import common
import compare_all_steps
import generate_report
from sweeplib import results_io
from sweeplib import results_read
from sweeplib import solver_check
from sweeplib import verdict
from sweeplib import base
from sweeplib.config import add_verdict_flags, bounded_float, build_parser, resolve_paths
from sweeplib import data
from sweeplib import metrics
from sweeplib import controls
from sweeplib import execution
from sweeplib import pipeline


def grid_table(rows):
    """Summary of grid cells: CV and each eval set's headline at the last step."""
    sets = list(dict.fromkeys(n for r in rows for n in r["metrics"]))
    head = {n: metrics.headline_metric(next(r["metrics"][n] for r in rows if n in r["metrics"]))
            for n in sets}
    t = generate_report.Table(
        ["layer", "C", "penalty", "CV AUROC", "non-zero w"]
        + [f"{n[:12]} {generate_report.SHORT_METRIC.get(head[n], '')[:9]}" for n in sets],
        [[str(r["layer"]), f"{r['C']:g}", r["penalty"], f"{r['cv_auroc']:.3f}",
          str(r["n_nonzero_weights"])]
         + [generate_report.fmt(r["metrics"].get(n, {}).get(head[n])) for n in sets]
         for r in rows], right=set(range(1, 5 + len(sets))))
    return generate_report.render_table_text(t)


def transfer_table(doc):
    """The transfer matrix as text."""
    evals = doc["eval_sets"]
    rows = []
    for mix in doc["train_mixes"]:
        cell = doc["cells"].get(mix, {})
        if "note" in cell:
            rows.append([mix] + ["n/a"] * len(evals))
        else:
            rows.append([mix] + [generate_report.fmt((cell.get(e) or {}).get("value"))
                                 for e in evals])
    return generate_report.render_table_text(generate_report.Table(
        ["training mix"] + [e[:14] for e in evals], rows, right=set(range(1, len(evals) + 1))))


def main(argv=None):
    """CLI entry point; exit 0 on success, 2 on bad input."""
    p = build_parser(__doc__.split("\n\n")[0].replace("\n", " "))
    add_verdict_flags(p)
    p.add_argument("--steps", type=int, nargs="+", choices=sorted(common.ALL_STEPS),
                   default=sorted(common.STEP_BY_NUMBER),
                   help="steps to run (4 = OOD-only control)")
    p.add_argument("--compare-only", action="store_true",
                   help="only print the comparison of existing results")
    p.add_argument("--figures", action="store_true",
                   help="also draw the PNG figures (about 2 CPU-seconds of matplotlib; "
                        "python figures.py draws them later from the results)")
    p.add_argument("--resume", action="store_true",
                   help="skip steps whose outputs exist and match the config and inputs")
    p.add_argument("--budget", metavar="N|base", type=_budget, default=None,
                   help="also run the fixed-budget arm with N training samples per step "
                        "('base' = step 0's size)")
    p.add_argument("--baseline", choices=("format",), default=None,
                   help="also run the sweep with a format-statistics-only probe")
    p.add_argument("--orderings", choices=("all",), default=None,
                   help="also run the 6 orders of adding the OOD sources")
    p.add_argument("--transfer", action="store_true",
                   help="also train on each source alone and on all-but-one (transfer matrix)")
    p.add_argument("--solver-check", nargs="?", type=bounded_float("tol"), default=None,
                   const=solver_check.CHECK_TOL, metavar="TOL",
                   help="also refit every step at a tight tolerance (default 1e-8) into "
                        "solver_check/: do the numbers and the verdict depend on where the "
                        "solver stops?")
    args = p.parse_args(argv)

    def body():
        """The run inside one results-folder session; with --figures, matplotlib is imported
        and the figures drawn in a separate process meanwhile."""
        figure_job = None
        try:
            with data.extra_evals(args.extra_eval):
                if args.figures and not args.compare_only:
                    figure_job = generate_report.start_figures()
                return _main(args, figure_job)
        finally:
            if figure_job is not None:
                figure_job.close()
    return results_io.run_cli(body)


def _budget(text):
    """argparse type of --budget: 'base' or a sample count >= 1."""
    if text == "base":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a sample count >= 1 or 'base', got {text!r}")
    return str(n)


def _main(args, figure_job=None):
    """Run what the flags ask for; InputError on bad input."""
    log = pipeline.quiet_log(args)
    _, results_dir = resolve_paths(args)
    grid = len(args.C) > 1 or len(args.penalty) > 1 or bool(args.layers)
    if grid and args.compare_only:
        rows = (analysis.grid_summary(results_dir) or {}).get("cells")
        if not rows:
            raise base.InputError(f"{results_dir}/grid_summary.json: no grid results")
        print(grid_table(rows))
        return 0
    if grid and not args.compare_only:
        steps = [common.step_spec(k) for k in sorted(set(args.steps))]
        results_io.claim(results_dir)
        with execution.context(args):
            rows = controls.run_grid(args, steps, results_dir, args.resume)
        results_io.commit_all(derived=False)      # the main sweep's files stay as they are
        log(grid_table(rows))
        log(f"\nwrote {results_dir / 'grid_summary.json'} (main sweep untouched)")
        return 0
    if not args.compare_only:
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
                controls.run_budget_arm(ctx, steps, results_dir, config, args.budget,
                                     args.resume)
            if args.baseline == "format":
                controls.run_format_baseline(ctx, steps, results_dir, config, args.resume)
            if args.orderings:
                controls.run_orderings(ctx, results_dir, config, args.resume)
            if args.transfer:
                doc, path = controls.run_transfer(ctx, results_dir, config)
                log(transfer_table(doc) + f"\nwrote {path}")
            if args.solver_check:
                controls.run_solver_check(ctx, steps, results_dir, config, args.solver_check, args.resume)
        results_io.commit_all()            # every folder of the run switched in together
    with base.timed("analysis"):
        a = analysis.analyze(results_dir, criteria=verdict.Criteria.from_args(args))
    if not args.quiet:
        sys.stdout.write(compare_all_steps.render_console(a))
    with base.timed("report, figures, dashboard"):
        written = generate_report.write_outputs(results_dir, a=a, figure_job=figure_job,
                                                figures=args.figures)
    log("\nwrote " + ", ".join(str(p) for p in written))
    if not args.figures:
        log(f"figures: python figures.py --results-dir {results_dir} (or run_all.py --figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
