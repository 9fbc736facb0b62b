"""Writing what an analyzed results folder shows: the report (txt, md, csv), the dashboard
(html), verdict.json and the figures, the figures drawn in a separate process meanwhile.

    written = write_outputs(results_dir, a)         # report.txt, dashboard.html, verdict.json
"""
from __future__ import annotations

import sys
from pathlib import Path

from sweeplib import analysis, dashboard, overlap, verdict
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


def write_outputs(results_dir, result, formats=("txt", "html"), figure_job=None, figures=True):
    """Report(s), dashboard and figures of an analyzed results folder; return the paths.
    figure_job (start_figures()): the figures are drawn there while the reports are written."""
    check_ownership(results_dir, derived_only=True)
    if not figures:
        return ([write_report(results_dir, fmt_name=f, result=result) for f in formats]
                + [verdict.write(results_dir, result)])
    job = figure_job or _InProcess()
    job.send((results_dir, result))
    try:
        written = ([write_report(results_dir, fmt_name=f, result=result) for f in formats]
                   + [verdict.write(results_dir, result)])
    except BaseException:
        job.cancel()                    # no figures for results whose report failed
        raise
    pngs, note = job.result()
    if note:
        print(note, file=sys.stderr)
    return written + pngs


def start_figures():
    """A separate process (overlap.py) that imports matplotlib now, then draws the figures of
    the results handed to it by write_outputs; close() it when no figures are wanted."""
    job = overlap.start(_draw_figures, inbox=True)
    job.name = "figures"
    return job


def _draw_figures(receive, work=None):
    """(PNG paths, note or None) for the (results_dir, analysis) received; ([], None) when
    closed without work."""
    from sweeplib import figures          # matplotlib: imported only where figures are drawn
    results_dir, result = work or receive() or (None, None)
    if results_dir is None:
        return [], None
    if not figures.HAVE_MATPLOTLIB:
        return [], figures.MISSING_NOTE
    if not overlap.can_fork():        # threads share matplotlib's style state: one at a time
        return figures.write_figures(results_dir, result=result), None
    first = {figures.SCORES_FILE}                        # the costly one, drawn here ...
    other = overlap.start(figures.write_figures, results_dir, result=result,   # ... the others
                          only={figures.SWEEP_FILE, figures.TRANSFER_FILE})
    try:
        pngs = figures.write_figures(results_dir, result=result, only=first) + other.result()
    except BaseException:
        other.cancel()
        raise
    order = [figures.SWEEP_FILE, figures.SCORES_FILE, figures.TRANSFER_FILE]
    return sorted(pngs, key=lambda p: order.index(p.name)), None


class _InProcess:
    """The figures drawn here and now (no separate process)."""

    def __init__(self):
        self.work = None

    def send(self, work):
        """Keep the work for result()."""
        self.work = work

    def result(self):
        """Draw and return (paths, note)."""
        return _draw_figures(None, self.work)

    def cancel(self):
        """Nothing runs yet: nothing to stop."""
