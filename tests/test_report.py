"""Report: sections, formats, partial runs, verdict logic, console layout."""
import csv
import io

import pytest

from sweeplib import analysis
from sweeplib import controls_analysis
import run_all
from conftest import FAST_FLAGS
from sweeplib import outputs
from sweeplib import report

SECTIONS = ["Run", "Training progression", "in-distribution: gold_106", "OOD: sycophant",
            "OOD: model_organism", "OOD: benchmark", "Benchmark per class", "Inflection points",
            "Generalization gap", "Probe anatomy", "Leakage audit", "Findings and verdict"]


def test_every_section_present_in_txt_and_md(tiny_run):
    txt = outputs.write_report(tiny_run, fmt_name="txt").read_text()
    md = outputs.write_report(tiny_run, fmt_name="md").read_text()
    for title in SECTIONS:
        assert title in txt, title
        assert f"## {title}" in md, title
    assert "SYNTHETIC DEMO DATA" in txt.splitlines()[0]
    assert "VERDICT:" in txt and "data source : SYNTHETIC DEMO DATA" in txt


def test_markdown_tables_are_well_formed(tiny_run):
    md = outputs.write_report(tiny_run, fmt_name="md").read_text()
    lines = md.splitlines()
    tables = 0
    for i, line in enumerate(lines):
        if line.startswith("|---") or line.startswith("|--"):
            header = lines[i - 1]
            n = header.count("|")
            tables += 1
            j = i + 1
            while j < len(lines) and lines[j].startswith("|"):
                assert lines[j].count("|") - lines[j].count("\\|") == n, lines[j]
                j += 1
    assert tables >= 8


def test_csv_has_one_row_per_step_set_metric(tiny_run):
    a = analysis.analyze(tiny_run)
    text = outputs.write_report(tiny_run, fmt_name="csv", result=a).read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    expected = sum(len(s["rows"]) * len(s["metrics"]) for s in a.sets.values())
    assert len(rows) == expected == 4 * sum(len(s["metrics"]) for s in a.sets.values())
    assert set(rows[0]) == set(report.CSV_FIELDS)
    gold = [r for r in rows if r["eval_set"] == "gold_106" and r["metric"] == "auroc"]
    assert [float(r["value"]) for r in gold] == pytest.approx(
        [a.records[k]["evaluation"]["gold_106"]["auroc"] for k in range(4)])
    assert not [r for r in rows if r["eval_set"] == "sycophant" and r["metric"] == "auroc"]


def test_report_works_with_only_some_steps(tiny_cache, tmp_path):
    assert run_all.main(["--cache-dir", str(tiny_cache), "--results-dir", str(tmp_path),
                         "--steps", "0", "2"] + FAST_FLAGS) == 0
    txt = (tmp_path / "report.txt").read_text()
    assert "not run" in txt and "1 add_sycophant" in txt and "3 add_benchmark" in txt
    assert "Findings and verdict" in txt


def test_console_fits_in_100_columns_and_is_plain_ascii_off_tty(tiny_run):
    out = report.render_console(analysis.analyze(tiny_run), stream=io.StringIO())
    assert max(len(line) for line in out.splitlines()) <= 100
    assert out.isascii() and "\033[" not in out


def _arm(verdicts, kind="two-class"):
    return {n: {"role": "OOD", "kind": kind, "main_minus_arm": {"verdict": v}}
            for n, v in verdicts.items()}


def test_arm_conclusions():
    budget = controls_analysis.arm_conclusion
    text = budget("arm_budget", _arm({"a": "no clear change", "b": "no clear change"}))
    assert "do not show that more data adds" in text and "diversity" not in text
    text = budget("arm_budget", _arm({"a": "improved", "b": "degraded"}))
    assert "more data adds beyond diversity on a" in text and "significantly higher on b" in text
    assert "may be format detection" in budget("baseline_format", _arm({"a": "degraded"}))
    text = budget("baseline_format", _arm({"a": "improved", "b": "no clear change"}))
    assert "beats format-only on a" in text and "not significantly on b" in text
    assert budget("arm_budget", {}) == "no OOD set with both classes to compare"
    # all-AF sets compare sources: they never carry an arm's reading
    only_af = _arm({"a": "improved"}, kind="single-class")
    assert budget("arm_budget", only_af) == "no OOD set with both classes to compare"


HOSTILE = "/tmp/x\n```\n<img src=x onerror=alert(1)>\x1b[2J\udcff"


def _hostile_folder(tiny_run, tmp_path):
    """A copy of the tiny run that says it came from a real cache with a hostile path (the
    records' digests recomputed, as the tool would have written them)."""
    import json
    import shutil
    from conftest import write_record
    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    for path in folder.glob("step_*.json"):
        record = json.loads(path.read_text())
        record["config"]["cache_dir"] = HOSTILE
        record["data_source"] = "cache"
        record["data_warnings"] = [f"{HOSTILE}/x_labels.json: a warning"]
        write_record(path, record)
    return folder


def test_paths_are_escaped_for_text_and_markdown(tiny_run, tmp_path):
    """Issue 21: a cache folder named with a newline and a Markdown fence closed the code
    block of report.md, leaving a raw <img onerror=...> line; ESC sequences and a non-UTF-8
    byte reached report.txt raw (or made it fail to encode)."""
    folder = _hostile_folder(tiny_run, tmp_path)
    txt = outputs.write_report(folder, fmt_name="txt").read_text(encoding="utf-8")
    md = outputs.write_report(folder, fmt_name="md").read_text(encoding="utf-8")
    shown = "/tmp/x\\n```\\n<img src=x onerror=alert(1)>\\x1b[2J\\xff"
    assert f"real cache {shown}" in txt and "\x1b" not in txt
    assert "\x1b" not in md and not any(line.startswith("<img") for line in md.splitlines())
    lines = md.splitlines()
    at = next(i for i, line in enumerate(lines) if "real cache" in line)
    opening = next(line for line in reversed(lines[:at]) if line and set(line) == {"`"})
    assert len(opening) > 3                                # longer than the ``` inside
    start = max(i for i in range(at) if lines[i] == opening)   # this block's fence (the
    assert not any(line.startswith(opening) for line in lines[start + 1:at])  # answer's first)


def test_an_interval_that_excludes_zero_is_never_a_bare_ns():
    from sweeplib.render import fmt_delta
    d = {"delta": -0.070, "ci": [-0.122, -0.017], "verdict": "no clear change",
         "p_adjusted": 0.09}
    assert fmt_delta(d) == "-0.070 [-0.122, -0.017] ns (Holm), p_adj 0.09"
    assert fmt_delta({**d, "ci": [-0.122, 0.004]}) == "-0.070 [-0.122, +0.004] ns, p_adj 0.09"
    assert fmt_delta({**d, "p_adjusted": None}).endswith(" ns")    # per comparison: agree
