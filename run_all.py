"""Run the distribution sweep: every step in one process (each dataset loaded once), then the
comparison and the report.

    python run_all.py --demo                    # synthetic demo cache -> results/demo/
    python run_all.py --cache-dir DIR           # real cache -> results/distribution_sweep/
    python run_all.py --steps 0 1 --resume      # some steps; skip those already up to date
    python run_all.py --compare-only            # print the comparison of existing results
"""
from __future__ import annotations

import sys

import analysis
import common
import compare_all_steps
import generate_report


def main(argv=None):
    """CLI entry point; exit 0 on success, 2 on bad input."""
    p = common.build_parser(__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, nargs="+", choices=sorted(common.STEP_BY_NUMBER),
                   default=sorted(common.STEP_BY_NUMBER), help="steps to run")
    p.add_argument("--compare-only", action="store_true",
                   help="only print the comparison of existing results")
    p.add_argument("--resume", action="store_true",
                   help="skip steps whose outputs exist and match the config and inputs")
    args = p.parse_args(argv)
    try:
        _, results_dir = common.resolve_paths(args)
        if not args.compare_only:
            common.run_sweep(args, sorted(set(args.steps)), resume=args.resume)
        a = analysis.analyze(results_dir)
        if not args.quiet:
            sys.stdout.write(compare_all_steps.render_console(a))
        written = generate_report.write_outputs(results_dir, a=a)
        if not args.quiet:
            print("\nwrote " + ", ".join(str(p) for p in written))
    except common.InputError as e:
        return common.die(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
