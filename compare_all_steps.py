"""Print the step-by-step comparison of a sweep: training progression, every eval set's metrics
with 95 % CIs and paired step-to-step changes, inflection points, generalization gap, findings.

    python compare_all_steps.py [--results-dir results/distribution_sweep] [--allow-mixed]

Same analysis as generate_report.py (analysis.py); steps without results show as "not run".
"""
from __future__ import annotations

import sys

from sweeplib import analysis
import generate_report as rep
from sweeplib import results_io
from sweeplib import verdict
from sweeplib import config


def render_console(a, stream=sys.stdout):
    """The comparison as console text: plain ASCII, colour only on a TTY."""
    text = rep.render_text(rep.build_sections(a, header=False), rep.title_for(a))
    if a["data_source"] == "demo":
        text = "*** SYNTHETIC DEMO DATA: numbers show how the tool behaves, not real findings ***\n" + text
    if stream.isatty():
        for word, code in (("improved", "32"), ("degraded", "31"), ("VERDICT:", "1"),
                           ("WARNING:", "33")):
            text = text.replace(word, f"\033[{code}m{word}\033[0m")
    return text


def main(argv=None):
    """CLI entry point."""
    p = config.results_parser(__doc__)
    args = p.parse_args(argv)

    def body():
        """Analyze and print."""
        sys.stdout.write(render_console(analysis.analyze(
            args.results_dir, args.allow_mixed, criteria=verdict.Criteria.from_args(args))))
        return 0
    return results_io.run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
