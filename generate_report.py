"""Write the sweep's report: the comparison as a self-contained text, Markdown or CSV file,
or the interactive dashboard (html); figures are written next to it.

    python generate_report.py [--results-dir results/distribution_sweep] [--output PATH]
                              [--format txt|md|csv|html] [--allow-mixed] [--no-figures]

Reads the step files only (no retraining); the numbers are those of compare_all_steps.py.
The figures are drawn by default (--figures says so, --no-figures skips them); --output NAME
writes into the results folder, --output DIR/NAME or ./NAME where the path says.
"""
from __future__ import annotations

if __name__ == "__main__":      # first: Ctrl-C during the imports below is one line, exit 130
    from sweeplib import interrupt
    interrupt.install()

import sys

from sweeplib import analysis, outputs, results_io, verdict
from sweeplib.config import parse_output, path_flag, results_parser


def main(argv=None):
    """CLI entry point."""
    p = results_parser(__doc__)
    p.add_argument("--output", type=path_flag, default=None,
                   help="report file (default <results-dir>/report.<format>); a bare name "
                        "goes into the results folder, a path (./r.txt, dir/r.txt) as given")
    p.add_argument("--format", choices=("txt", "md", "csv", "html"), default="txt",
                   help="report format (html: the interactive dashboard, dashboard.html)")
    figs = p.add_mutually_exclusive_group()
    figs.add_argument("--figures", dest="no_figures", action="store_false", default=False,
                      help="also draw the PNG figures (the default)")
    figs.add_argument("--no-figures", dest="no_figures", action="store_true",
                      help="write the report only")
    args = parse_output(p, p.parse_args(argv))

    def body():
        """Analyze, write the report, the verdict and the figures."""
        result = analysis.analyze(args.results_dir, args.allow_mixed,
                                  criteria=verdict.Criteria.from_args(args))
        written = [outputs.write_report(args.results_dir, args.output, args.format,
                                        result=result)]
        if not args.no_figures:
            written += outputs.write_outputs(args.results_dir, result, formats=())
        else:
            written.append(verdict.write(args.results_dir, result))
        print("wrote " + ", ".join(str(p) for p in written))
        return 0
    return results_io.run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
