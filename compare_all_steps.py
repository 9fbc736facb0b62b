"""Print the step-by-step comparison of a sweep: training progression, every eval set's metrics
with 95 % CIs and paired step-to-step changes, inflection points, generalization gap, findings.

    python compare_all_steps.py [--results-dir results/distribution_sweep] [--allow-mixed]

Same analysis as generate_report.py (analysis.py); steps without results show as "not run".
"""
from __future__ import annotations

if __name__ == "__main__":      # first: Ctrl-C during the imports below is one line, exit 130
    from sweeplib import interrupt
    interrupt.install()

import sys

from sweeplib import analysis, results_io, verdict
from sweeplib.config import results_parser
from sweeplib.report import render_console


def main(argv=None):
    """CLI entry point."""
    args = results_parser(__doc__).parse_args(argv)

    def body():
        """Analyze and print."""
        sys.stdout.write(render_console(analysis.analyze(
            args.results_dir, args.allow_mixed, criteria=verdict.Criteria.from_args(args))))
        return 0
    return results_io.run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
