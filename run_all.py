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
    --methods lr massmean ...
                           probe families / representations as arms next to the reference
                           (methods.json; default: methods.DEFAULT_METHODS; lr = none)
    --layers 16 31 40 53, -C 0.1 1 10, --penalty l1 l2
                           a grid: every cell in grid/layer_<L>/C_<C>/penalty_<p>/
"""
from __future__ import annotations

if __name__ == "__main__":      # first: Ctrl-C during the imports below is one line, exit 130
    from sweeplib import interrupt
    interrupt.install()

import sys

import common
from sweeplib import methods, results_io, runner, solver_check
from sweeplib.config import (RunConfig, add_verdict_flags, bounded_float, budget_flag,
                             build_parser)


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
                        "generate_report.py draws them later from the results)")
    p.add_argument("--resume", action="store_true",
                   help="skip steps whose outputs exist and match the config and inputs")
    p.add_argument("--budget", metavar="N|base", type=budget_flag, default=None,
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
    p.add_argument("--methods", nargs="+", default=list(methods.DEFAULT_METHODS),
                   metavar="FAMILY[+REP]",
                   help="method arms fitted next to the reference on the same mixes, folds "
                        f"and held-out rows (families: {', '.join(methods.FAMILIES)}; "
                        f"representations: {', '.join(methods.REPRESENTATIONS)}; default: "
                        f"{' '.join(methods.DEFAULT_METHODS)}; 'lr' alone: the reference "
                        "only, as before)")
    args = p.parse_args(argv)

    return results_io.run_cli(lambda: runner.run(RunConfig.from_args(args),
                                                 runner.Request.from_args(args)))


if __name__ == "__main__":
    sys.exit(main())
