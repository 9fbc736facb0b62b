"""The HTML dashboard: self-contained file, CLI, and the DOM headless Chromium renders from it."""
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from sweeplib import dashboard, stepfiles
from sweeplib import base
from sweeplib import metrics

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not found on PATH (chromium / chromium-browser); "
                             "install it with `apt-get install chromium` to run the DOM tests")
SUBCELL = "grid/layer_40/C_10/penalty_l2"
TRANSFER = {
    "train_mixes": ["train", "train+sycophant"],
    "eval_sets": ["gold_106", "sycophant"],
    "cells": {
        "train": {"gold_106": {"headline": "auroc", "value": 0.95, "auroc": 0.95,
                               "auroc_vs_reference_negatives": None, "detection_rate": 0.9},
                  "sycophant": {"headline": "auroc_vs_reference_negatives", "value": 0.55,
                                "auroc": None, "auroc_vs_reference_negatives": 0.55,
                                "detection_rate": 0.1}},
        "train+sycophant": {"gold_106": {"headline": "auroc", "value": None, "auroc": None,
                                         "auroc_vs_reference_negatives": None,
                                         "detection_rate": None},
                            "sycophant": {"headline": "auroc_vs_reference_negatives",
                                          "value": 0.05, "auroc": None,
                                          "auroc_vs_reference_negatives": 0.05,
                                          "detection_rate": 1.0}}},
}


@pytest.fixture(scope="module")
def dash(tiny_run, tmp_path_factory):
    """A copy of the tiny sweep plus a grid cell with an extra step 4 and a transfer matrix,
    and its dashboard."""
    root = tmp_path_factory.mktemp("dash") / "results"
    shutil.copytree(tiny_run, root)
    sub = root / SUBCELL
    sub.mkdir(parents=True)
    for p in root.glob("step_*"):
        shutil.copy(p, sub / p.name)
    record = json.loads((sub / "step_3_add_benchmark.json").read_text())
    record.update(step=4, name="ood_only")
    del record["evaluation"]["gold_106"]
    record["files"]["scores"] = "step_4_scores.npz"
    record["files"]["record_sha256"] = stepfiles.record_digest(record)    # a forged step 4
    (sub / "step_4_ood_only.json").write_text(json.dumps(record))
    shutil.copy(sub / "step_3_scores.npz", sub / "step_4_scores.npz")
    shutil.copy(sub / "step_3_probe.pkl", sub / "step_4_probe.pkl")
    rec0 = json.loads(next(root.glob("step_0_*.json")).read_text())   # from the same run
    link = {k: rec0[k] for k in ("config", "inputs", "data_source", "layer")}
    grid_cell = {"layer": 40, "C": 10.0, "penalty": "l2", "cv_auroc": record["cv_auroc_mean"],
                 "n_nonzero_weights": record["n_nonzero_weights"], "path": SUBCELL,
                 "metrics": {}}          # the grid summary that makes the cell this run's
    (root / "grid_summary.json").write_text(json.dumps({"cells": [grid_cell]}))
    (root / "transfer_matrix.json").write_text(json.dumps({**TRANSFER, **link}))
    return root, dashboard.write_dashboard(root)


def expected_points(folder, metric):
    """{set: {step: value}} of the defined values in a folder's step JSONs."""
    out = {}
    for path in folder.glob("step_*_*.json"):
        k = int(path.name.split("_")[1])
        for name, entry in json.loads(path.read_text())["evaluation"].items():
            v = metrics.flat_metrics(entry).get(metric)
            out.setdefault(name, {})
            if v is not None:
                out[name][k] = v
    return out


class ChartParser(HTMLParser):
    """Collects svg.metric-chart elements with their points, and transfer heatmap cells."""

    def __init__(self):
        super().__init__()
        self.charts, self.tm_cells, self.banner, self._chart = [], [], False, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "svg" and "metric-chart" in classes:
            self._chart = {**a, "points": [], "undefined": False}
            self.charts.append(self._chart)
        elif tag == "circle" and "point" in classes and self._chart is not None:
            self._chart["points"].append((int(a["data-step"]), float(a["data-value"])))
        elif tag == "text" and "undefined-note" in classes and self._chart is not None:
            self._chart["undefined"] = True
        elif tag == "text" and "y-label" in classes and self._chart is not None:
            self._chart["y_label"] = True
        elif tag == "rect" and "tm-cell" in classes:
            self.tm_cells.append(a)
        elif a.get("id") == "demo-banner":
            self.banner = True

    def handle_endtag(self, tag):
        if tag == "svg":
            self._chart = None


def chromium(html, fragment, tmp_path, *extra):
    """Run headless Chromium on the file with a fragment; return its stdout."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           "--virtual-time-budget=5000", *extra, f"{html.as_uri()}#{fragment}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def render(html, fragment, tmp_path):
    p = ChartParser()
    p.feed(chromium(html, fragment, tmp_path, "--dump-dom"))
    return p


def by_set(charts, cell):
    return {c["data-set"]: c for c in charts if c["data-cell"] == cell}


# ---- no browser -----------------------------------------------------------------------------
def test_html_is_self_contained_and_embeds_the_data(dash):
    root, html_path = dash
    html = html_path.read_text()
    assert html_path == root / "dashboard.html"
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"""<script[^>]*\ssrc\s*=|<link\b|@import|url\(\s*["']?https?:""",
                         html, re.I)
    assert "http://" not in html and "https://" not in html
    m = re.search(r'<script type="application/json" id="dashboard-data">(.*?)</script>', html,
                  re.S)
    data = json.loads(m.group(1))
    assert data["cell_order"] == [".", SUBCELL]
    assert [s["step"] for s in data["cells"][SUBCELL]["steps"]] == [0, 1, 2, 3, 4]
    assert data["cells"]["."]["data_source"] == "demo"
    assert data["transfer"]["train_mixes"] == TRANSFER["train_mixes"]
    want = expected_points(root, "auroc")["benchmark"]
    rows = data["cells"]["."]["sets"]["benchmark"]["rows"]
    assert {int(k): r["auroc"]["value"] for k, r in rows.items()} == pytest.approx(want)
    hist = data["cells"]["."]["sets"]["benchmark"]["hist"]
    n = json.loads((root / "step_0_base.json").read_text())["evaluation"]["benchmark"]["n_samples"]
    assert sum(hist["counts"]["0"]["af"]) + sum(hist["counts"]["0"]["neg"]) == n
    assert len(html) < 400_000   # binned counts, not every score


def test_cli_writes_output_and_reports_bad_input(dash, tmp_path, capsys):
    root, _ = dash
    out = tmp_path / "d.html"
    assert dashboard.main(["--results-dir", str(root), "--output", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert dashboard.main(["--results-dir", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {empty}: ") and "\n" not in err
    (tmp_path / "bad").mkdir()
    shutil.copytree(root, tmp_path / "bad" / "r", ignore=shutil.ignore_patterns("grid"))
    (tmp_path / "bad" / "r" / "transfer_matrix.json").write_text("{nope")
    with pytest.raises(base.InputError, match="transfer_matrix.json: not valid JSON"):
        dashboard.write_dashboard(tmp_path / "bad" / "r")


# ---- headless Chromium ----------------------------------------------------------------------
@pytest.mark.slow
@needs_chromium
def test_rendered_charts_match_results_and_follow_the_fragment(dash, tmp_path):
    root, html = dash
    sets = list(expected_points(root, "auroc"))
    for metric in ("auroc", "detection_rate", "recall_at_fpr_5"):
        page = render(html, f"metric={metric}", tmp_path)
        charts = by_set(page.charts, ".")
        assert len(page.charts) == len(charts) == len(sets)
        assert page.banner
        want = expected_points(root, metric)
        for name in sets:
            chart = charts[name]
            assert chart["data-metric"] == metric
            got = dict(chart["points"])
            assert sorted(got) == sorted(want[name]), (metric, name)
            for k, v in want[name].items():
                assert got[k] == pytest.approx(v, abs=1e-3)
            assert chart["undefined"] == (not want[name])
            if metric == "auroc" and chart["data-kind"] == "single-class":
                assert not got and chart["undefined"]
            if metric == "detection_rate":
                assert len(got) == 4
        roles = {c["data-set"]: c["data-role"] for c in page.charts}
        assert roles["gold_106"] == "in-distribution" and roles["benchmark"] == "OOD"
        assert {(c["data-mix"], c["data-set"]) for c in page.tm_cells} == {
            (m, e) for m in TRANSFER["train_mixes"] for e in TRANSFER["eval_sets"]}
        assert all(c.get("y_label") for c in page.charts)             # every chart's y axis
        fill = {c["data-value"]: re.match(r"hsl\((\d+), 70%, (\d+)%\)", c["fill"]).groups()
                for c in page.tm_cells if c.get("data-value") not in (None, "")}
        hue, light = {v: int(h) for v, (h, _) in fill.items()}, {v: int(x) for v, (_, x) in
                                                                  fill.items()}
        assert light["0.05"] < light["0.55"] > light["0.95"]          # chance is the palest
        assert hue["0.05"] != hue["0.95"]                              # below / above chance


@pytest.mark.slow
@needs_chromium
def test_compare_state_shows_two_cells_side_by_side(dash, tmp_path):
    root, html = dash
    page = render(html, f"metric=auroc&cell={SUBCELL}&compare=.", tmp_path)
    sub, main = by_set(page.charts, SUBCELL), by_set(page.charts, ".")
    assert set(sub) == set(main)
    assert sorted(dict(sub["benchmark"]["points"])) == [0, 1, 2, 3, 4]
    assert sorted(dict(sub["gold_106"]["points"])) == [0, 1, 2, 3]
    want = expected_points(root / SUBCELL, "auroc")["benchmark"]
    assert dict(sub["benchmark"]["points"]) == pytest.approx(want, abs=1e-3)
    # an unknown cell falls back to the main sweep
    page = render(html, "metric=nonsense&cell=no/such", tmp_path)
    assert {c["data-cell"] for c in page.charts} == {"."}
    assert {c["data-metric"] for c in page.charts} == {"auroc"}


@pytest.mark.slow
@needs_chromium
def test_changing_a_control_updates_the_fragment(dash, tmp_path):
    _, html = dash
    driver = """<script>
    setTimeout(() => {
      const s = document.getElementById("metric-select");
      s.value = "recall_at_fpr_1";
      s.dispatchEvent(new Event("change", {bubbles: true}));
      setTimeout(() => {
        const c = document.getElementById("compare-select");
        c.value = "%s";
        c.dispatchEvent(new Event("change", {bubbles: true}));
        setTimeout(() => document.body.setAttribute("data-final-hash", location.hash), 100);
      }, 100);
    }, 100);
    </script></body>""" % SUBCELL
    driven = tmp_path / "driven.html"
    driven.write_text(html.read_text().replace("</body>", driver))
    dom = chromium(driven, "metric=auroc", tmp_path, "--dump-dom")
    final = re.search(r'data-final-hash="([^"]*)"', dom).group(1).replace("&amp;", "&")
    assert final == f"#metric=recall_at_fpr_1&cell=.&compare={SUBCELL}"
    p = ChartParser()
    p.feed(dom)
    assert {(c["data-cell"], c["data-metric"]) for c in p.charts} == {
        (".", "recall_at_fpr_1"), (SUBCELL, "recall_at_fpr_1")}


@pytest.mark.slow
@needs_chromium
def test_screenshot_is_a_png(dash, tmp_path):
    _, html = dash
    shot = tmp_path / "dash.png"
    chromium(html, "metric=recall_at_fpr_5", tmp_path, f"--screenshot={shot}",
             "--window-size=1400,2000")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1400, 2000)
    assert 20_000 < len(data) < 20_000_000


@pytest.mark.slow
@needs_chromium
def test_verdict_premises_and_reasons_are_shown(tiny_run, tmp_path):
    """The dashboard shows the same verdict as verdict.json: outcome, reasons, premise checks."""
    from sweeplib import analysis
    from sweeplib import verdict
    root = tmp_path / "results"
    shutil.copytree(tiny_run, root)
    a = analysis.analyze(root)
    doc = json.loads(verdict.write(root, a).read_text())
    html = dashboard.write_dashboard(root, result=a)
    dom = chromium(html, "metric=auroc", tmp_path, "--dump-dom")
    outcome = re.search(r'<p id="verdict-outcome"><b>([^<]*)</b>', dom).group(1)
    assert outcome == doc["outcome"]
    premises = re.search(r'<ul id="premises">(.*?)</ul>', dom, re.S).group(1)
    items = re.findall(r'<li class="(ok|failed)">(ok|FAILED): ([a-z_]+):', premises)
    assert [(c, name) for c, _, name in items] == [
        ("ok" if p["passed"] else "failed", p["name"]) for p in doc["premises"]]
    import html as html_lib
    text = html_lib.unescape(dom)
    for reason in doc["reasons"]:
        assert reason in text, reason
    listed = re.findall(r"<li[^>]*>(premise (?:ok|FAILED)|ok|FAILED): ", dom)
    assert len(listed) == len(doc["premises"])                         # listed once
    block = re.search(r'<pre id="answer">(.*?)</pre>', dom, re.S)      # the answer first
    assert block and dom.index('id="answer"') < dom.index('id="verdict-outcome"')
    assert html_lib.unescape(block.group(1)).startswith("ANSWER: ")
    assert f"({doc['outcome']})" in html_lib.unescape(block.group(1)).splitlines()[0]


def test_each_set_carries_its_headline_metric(dash):
    root, html_path = dash
    m = re.search(r'<script type="application/json" id="dashboard-data">(.*?)</script>',
                  html_path.read_text(), re.S)
    sets = json.loads(m.group(1))["cells"]["."]["sets"]
    assert sets["benchmark"]["headline"] == "auroc" and sets["gold_106"]["headline"] == "auroc"
    assert sets["sycophant"]["headline"] == "auroc_vs_reference_negatives"
    assert {s["role"] for s in sets.values()} == {"in-distribution", "OOD"}


@pytest.mark.slow
@needs_chromium
def test_default_view_shows_each_sets_headline_metric(dash, tmp_path):
    """Without a metric in the fragment every chart shows its set's headline metric, so an
    all-AF set shows its AUROC vs reference negatives instead of an empty AUROC panel."""
    root, html = dash
    page = render(html, "", tmp_path)
    charts = by_set(page.charts, ".")
    assert charts["sycophant"]["data-metric"] == "auroc_vs_reference_negatives"
    assert charts["benchmark"]["data-metric"] == "auroc"
    assert not any(c["undefined"] for c in charts.values())


def test_the_dashboard_shows_only_this_runs_folders(tiny_run, tmp_path):
    """Issue 21: with arm_budget/ and transfer_matrix.json left from another run the console
    and report said 'not shown', the dashboard showed both. One rule (analysis.run_folders)."""
    from conftest import write_record
    from sweeplib import analysis
    root = tmp_path / "results"
    shutil.copytree(tiny_run, root)
    for name in ("arm_budget", "stray"):
        (root / name).mkdir()
        for p in root.glob("step_*"):
            shutil.copy(p, root / name / p.name)
        for p in (root / name).glob("step_*.json"):
            record = json.loads(p.read_text())
            record["config"]["seed"] = 1                      # another run's
            write_record(p, record)
    rec0 = json.loads(next(root.glob("step_0_*.json")).read_text())
    link = {k: rec0[k] for k in ("config", "inputs", "data_source", "layer")}
    (root / "transfer_matrix.json").write_text(json.dumps({**TRANSFER, **link, "layer": 16}))
    result = analysis.analyze(root)
    assert result.arms == {} and result.transfer is None
    data = dashboard.dashboard_data(root, result)
    assert data["cell_order"] == ["."] and data["transfer"] is None
    warn = data["cells"]["."]["warnings"]
    assert any(w.startswith("arm_budget/: not from the main sweep's run") for w in warn), warn
    assert any(w.startswith("stray/: not from the main sweep's run") for w in warn), warn
    assert any(w.startswith("transfer_matrix.json: not from the main sweep") for w in warn)
    mixed = dashboard.dashboard_data(root, analysis.analyze(root, allow_mixed=True))
    assert "arm_budget" in mixed["cell_order"] and mixed["transfer"] is not None


def test_a_results_folder_name_the_page_cannot_hold_raw_is_escaped(tiny_run, tmp_path):
    """Issue 21: a path with a non-UTF-8 byte made writing the dashboard fail; a name with
    HTML or ESC sequences must reach the page as text."""
    root = tmp_path / "r\udcff\x1b[2J<img src=x onerror=alert(1)>"
    shutil.copytree(tiny_run, root)
    html = dashboard.write_dashboard(root).read_text(encoding="utf-8")
    title = re.search(r"<title>(.*?)</title>", html, re.S).group(1)
    assert "<img" not in title and "\x1b" not in html and "\\xff" in title
    m = re.search(r'<script type="application/json" id="dashboard-data">(.*?)</script>', html,
                  re.S)
    assert "<img" not in m.group(1)
