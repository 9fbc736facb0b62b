"""Writing what an analyzed results folder shows: the report (txt, md, csv), the dashboard
(html), verdict.json and the figures.

    written = write_outputs(results_dir, a)         # report.txt, dashboard.html, verdict.json
"""
from __future__ import annotations

import sys
from pathlib import Path

from sweeplib import analysis, dashboard, verdict
from sweeplib.base import printable
from sweeplib.ownership import check_ownership, write_owned
from sweeplib.report import build_sections, render_csv, title_for
from sweeplib.render import render_markdown, render_text


def write_report(results_dir, output=None, fmt_name="txt", allow_mixed=False, result=None):
    """Analyze a results folder and write the report; return its path."""
    if output is None:
        check_ownership(results_dir, derived_only=True)
    result = result or analysis.analyze(results_dir, allow_mixed)
    if fmt_name == "html":
        return dashboard.write_dashboard(results_dir, output, result=result,
                                         allow_mixed=allow_mixed)
    if fmt_name == "csv":
        text = render_csv(result)
    elif fmt_name == "md":
        text = render_markdown(build_sections(result, n_metrics=4), title_for(result))
    else:
        text = render_text(build_sections(result), title_for(result))
    output = Path(output) if output else Path(results_dir) / f"report.{fmt_name}"
    write_owned(output, printable(text, keep="\n\t").encode())
    return output


def write_outputs(results_dir, result, formats=("txt", "html"), figures=True):
    """Report(s), dashboard, verdict.json and (figures=True) the figures of an analyzed results
    folder, in this order (no figures for results whose report failed); return the paths."""
    check_ownership(results_dir, derived_only=True)
    written = ([write_report(results_dir, fmt_name=f, result=result) for f in formats]
               + [verdict.write(results_dir, result)])
    if not figures:
        return written
    from sweeplib import figures as figs      # matplotlib: imported only where figures are drawn
    if not figs.HAVE_MATPLOTLIB:
        print(figs.MISSING_NOTE, file=sys.stderr)
        return written
    return written + figs.write_figures(results_dir, result=result)
