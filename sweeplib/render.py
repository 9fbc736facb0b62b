"""Rendering: tables and sections, formatted as plain text (100 columns), Markdown or CSV.
The report (report.py) builds the sections; this module only lays them out.
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field

from sweeplib.console import printable


@dataclass
class Table:
    """A table: headers, rows of strings, and which columns are right-aligned."""
    headers: list
    rows: list
    right: set = field(default_factory=set)


@dataclass
class Section:
    """A titled list of blocks (strings are paragraphs, Tables are tables)."""
    title: str
    blocks: list


def fmt(x, ci=None, pct=False):
    """'0.912 [0.874, 0.946]', or 'n/a' for an undefined value."""
    if x is None:
        return "n/a"
    f = (lambda v: f"{v:.1%}") if pct else (lambda v: f"{v:.3f}")
    if ci and ci[0] is not None:
        return f"{f(x)} [{f(ci[0])}, {f(ci[1])}]"
    return f(x)


def fmt_delta(d):
    """'+0.123 [+0.080, +0.160] improved, p_adj 0.003' (ns: no clear change; p_adj when the
    call is Holm-adjusted: 'ns (Holm)' when the per-comparison interval excludes 0)."""
    if not d:
        return ""
    lo, hi = d["ci"]
    word = "ns" if d["verdict"] == "no clear change" else d["verdict"]
    adjusted = d.get("p_adjusted") is not None
    if adjusted and word == "ns" and (lo > 0 or hi < 0):
        word = "ns (Holm)"          # the interval is per comparison, the call adjusted
    adj = f", p_adj {d['p_adjusted']:.2g}" if adjusted else ""
    return f"{d['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}] {word}{adj}"


def fmt_difference(d, other):
    """'+0.123 [+0.080, +0.160] sweep higher' for a sweep-minus-arm paired difference."""
    word = {"improved": "sweep higher", "degraded": f"{other} higher"}.get(d["verdict"],
                                                                          "no clear difference")
    lo, hi = d["ci"]
    return f"{d['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}] {word}"


def step_label(result, k):
    """'0 base' etc."""
    return f"{k} {result.records[k]['name']}"


def render_table_text(t):
    """A plain-text table with aligned columns (cells on one line: printable)."""
    t = Table(t.headers, [[printable(c) for c in r] for r in t.rows], t.right)
    widths = [max(len(str(x)) for x in [h] + [r[i] for r in t.rows]) for i, h in enumerate(t.headers)]
    def line(cells):
        """One row of the table, aligned."""
        return "  ".join(str(c).rjust(w) if i in t.right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(t.headers), line(["-" * w for w in widths])] + [line(r) for r in t.rows])


WIDTH = 100


def wrap(text, width=WIDTH):
    """Wrap each line of a paragraph; '- ' bullets get a hanging indent; a line indented by
    four spaces (a command to paste) is never broken."""
    out = []
    for line in text.split("\n"):
        if line.startswith("    "):
            out.append(line)
            continue
        indent = "  " if line.startswith("- ") else ""
        out.append(textwrap.fill(line, width, subsequent_indent=indent,
                                 break_on_hyphens=False) if len(line) > width else line)
    return "\n".join(out)


def render_text(sections, title="Distribution sweep"):
    """Sections as plain text, paragraphs wrapped at 100 columns."""
    out = [title, "=" * len(title), ""]
    for s in sections:
        out += [s.title, "-" * len(s.title)]
        for b in s.blocks:
            out += [render_table_text(b) if isinstance(b, Table) else wrap(b), ""]
    return "\n".join(out).rstrip() + "\n"


def _md_text(text):
    """Markdown text outside code blocks: no raw HTML (a name holding '<img ...>' stays text)."""
    return printable(text, keep="\n").replace("&", "&amp;").replace("<", "&lt;")


def _fence(block):
    """A code block whose fence is longer than any run of backticks inside (cannot close)."""
    longest = max((len(m) for m in re.findall(r"`+", block)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{printable(block, keep=chr(10))}\n{fence}"


def render_markdown(sections, title="Distribution sweep"):
    """Sections as Markdown (pipe tables); every name and path escaped for Markdown."""
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Table):
                out.append("| " + " | ".join(b.headers) + " |")
                out.append("|" + "|".join("---:" if i in b.right else "---"
                                          for i in range(len(b.headers))) + "|")
                out += ["| " + " | ".join(_md_text(printable(c)).replace("|", "\\|")
                                          for c in r) + " |" for r in b.rows]
            elif "\n" in b and not b.startswith("- "):
                out.append(_fence(b))
            else:
                out.append(_md_text(b))
            out.append("")
    return "\n".join(out).rstrip() + "\n"
