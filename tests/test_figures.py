"""Report figures: PNG files from a tiny demo sweep (tiny_cache / tiny_run from conftest.py)."""
import dataclasses
import json
import shutil
import struct
import zlib

import pytest

from sweeplib import analysis
import common
from sweeplib import figures
from sweeplib import hints
from sweeplib import results_read
import run_all
from conftest import FAST_FLAGS, write_record
from sweeplib import base

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunks(data):
    """[(type, payload)] of a PNG file; asserts the signature and every chunk's CRC."""
    assert data[:8] == PNG_SIGNATURE
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        payload = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + payload), f"bad CRC in {kind!r} chunk"
        out.append((kind.decode("ascii"), payload))
        pos += 12 + length
    assert out[0][0] == "IHDR" and out[-1][0] == "IEND"
    return out


def png_size(path):
    """(width, height) from the IHDR chunk."""
    chunks = png_chunks(path.read_bytes())
    return struct.unpack(">II", chunks[0][1][:8])


def check_png(path, min_wh=(500, 300), max_wh=(4000, 4000)):
    """A real, sanely sized PNG; returns (width, height)."""
    assert path.is_file(), path
    assert 10_000 < path.stat().st_size < 3_000_000, path.stat().st_size
    w, h = png_size(path)
    assert min_wh[0] <= w <= max_wh[0] and min_wh[1] <= h <= max_wh[1], (w, h)
    return w, h


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A private copy of the tiny sweep's results folder."""
    dst = tmp_path / "results"
    shutil.copytree(tiny_run, dst)
    for png in dst.glob("*.png"):
        png.unlink()
    return dst


TRANSFER = {
    "train_mixes": ["train", "train+sycophant"],
    "eval_sets": ["gold_106", "benchmark"],
    "cells": {"train": {"gold_106": {"headline": "auroc", "value": 0.97},
                        "benchmark": {"headline": "auroc", "value": None}},
              "train+sycophant": {"gold_106": {"headline": "auroc", "value": 0.95},
                                  "benchmark": {"headline": "auroc", "value": 0.41,
                                                "ci": [0.3, 0.5]}}},
}


# ---- the two standard figures -----------------------------------------------------------------
@pytest.mark.slow
def test_full_run_writes_sweep_and_score_figures_deterministically(run_copy):
    assert figures.HAVE_MATPLOTLIB
    a = analysis.analyze(run_copy)
    paths = figures.write_figures(run_copy, a)
    assert paths == [run_copy / figures.SWEEP_FILE, run_copy / figures.SCORES_FILE,
                     run_copy / figures.METHODS_FILE]           # the default method arms
    check_png(paths[2])
    sweep_wh = check_png(paths[0])
    w, h = check_png(paths[1])
    assert h > w * 0.5                       # 4 step rows for 4 eval set columns
    assert not (run_copy / figures.TRANSFER_FILE).exists()
    # no temp files left (the ownership marks stay), and no date/software metadata in the PNG
    assert sorted(p.name for p in run_copy.iterdir() if p.name.startswith(".")) == [
        ".sweep-owned"]
    for kind, payload in png_chunks(paths[0].read_bytes()):
        if kind in ("tEXt", "iTXt", "zTXt"):
            assert b"Software" not in payload and b"Creation" not in payload
        assert kind != "tIME"
    # same results -> byte-identical file (analysis recomputed)
    with figures.matplotlib.style.context("default"), \
            figures.matplotlib.rc_context(figures.STYLE):
        again = figures._png_bytes(figures.sweep_figure(analysis.analyze(run_copy)))
    assert again == paths[0].read_bytes()
    assert png_size(paths[0]) == sweep_wh


def test_demo_data_is_flagged_in_titles(tiny_run):
    a = analysis.analyze(tiny_run)
    assert a.data_source == "demo"
    fig = figures.sweep_figure(a)
    assert figures.DEMO_TAG in fig._suptitle.get_text()
    a_real = dataclasses.replace(a, data_source="cache")
    assert figures.DEMO_TAG not in figures.sweep_figure(a_real)._suptitle.get_text()


def test_sweep_panels_follow_headline_metric_and_role(tiny_run):
    a = analysis.analyze(tiny_run)
    fig = figures.sweep_figure(a)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == len(a.sets)
    for ax, (name, s) in zip(axes, a.sets.items()):
        title, ylabel = ax.get_title(), ax.get_ylabel()
        assert name in title
        assert ("[in-distribution]" in title) == (s["role"] == "in-distribution")
        assert ("[OOD]" in title) == (s["role"] == "OOD")
        if s["headline"] == "auroc":
            assert ylabel == "AUROC"
        else:
            assert "not" in ylabel and "AUROC" in ylabel
        # chance line at 0.5 for AUROC-type headlines
        chance = [ln for ln in ax.get_lines() if list(ln.get_ydata()) == [0.5, 0.5]]
        assert bool(chance) == (s["headline"] in figures.AUROC_TYPE)
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert ticks == [f"{k}\n{a.records[k]['name']}" for k in a.steps]
    ood = {ax.title.get_color() for ax, s in zip(axes, a.sets.values()) if s["role"] == "OOD"}
    ind = {ax.title.get_color() for ax, s in zip(axes, a.sets.values())
           if s["role"] == "in-distribution"}
    assert ood and ind and not ood & ind


def test_score_grid_marks_threshold_and_shares_bins_per_column(tiny_run):
    a = analysis.analyze(tiny_run)
    scores = figures._load_step_scores(tiny_run, a)
    fig = figures.score_figure(a, scores)
    n_steps, n_sets = len(a.steps), len(a.sets)
    axes = fig.axes
    assert len(axes) == n_steps * n_sets
    for j in range(n_sets):
        column = axes[j::n_sets]
        assert len({ax.get_xlim() for ax in column}) == 1          # shared range per column
        for ax in column:
            assert any(list(ln.get_xdata()) == [0.0, 0.0] for ln in ax.get_lines())
    assert "clipped" in axes[-1].get_xlabel()
    # the step-0 probe scores every OOD sample below 0; the note counts say so
    ood_cols = [j for j, s in enumerate(a.sets.values()) if s["role"] == "OOD"]
    for j in ood_cols:
        note = axes[j].texts[-1].get_text()
        assert "AF ≥ 0: 0/" in note, note


# ---- optional inputs ---------------------------------------------------------------------------
def test_transfer_matrix_when_json_exists(run_copy):
    # (absent JSON -> no heatmap: see the full-run test)
    a = analysis.analyze(run_copy)
    (run_copy / figures.TRANSFER_JSON).write_text(json.dumps(TRANSFER))
    paths = figures.write_figures(run_copy, a)
    assert [p.name for p in paths] == [figures.SWEEP_FILE, figures.SCORES_FILE,
                                       figures.TRANSFER_FILE, figures.METHODS_FILE]
    check_png(paths[2], min_wh=(400, 200))
    fig = figures.transfer_figure(a, results_read.read_transfer(run_copy / figures.TRANSFER_JSON))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.97", "n/a", "0.95", "0.41"]
    (run_copy / figures.TRANSFER_JSON).write_text('{"train_mixes": "oops"}')
    for p in paths:
        p.unlink()
    with pytest.raises(base.InputError, match="transfer_matrix.json"):
        figures.write_figures(run_copy, a)
    assert not list(run_copy.glob("*.png"))           # bad input fails before drawing
    assert figures.main(["--results-dir", str(run_copy), "--quiet"]) == 2


def test_fixed_budget_arm_is_overlaid(run_copy):
    a = analysis.analyze(run_copy)
    plain = figures.sweep_figure(a)
    arm_dir = run_copy / figures.ARM_DIR
    arm_dir.mkdir()
    for f in run_copy.glob("step_[01]_*"):
        shutil.copy(f, arm_dir / f.name)
    arm = figures._analyze_arm(run_copy)
    assert arm.steps == [0, 1]
    fig = figures.sweep_figure(a, arm)
    dashed = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) >= len(a.sets)
    assert not any(ln.get_linestyle() == "--" for ax in plain.axes for ln in ax.get_lines())
    assert "fixed budget" in [t.get_text() for t in fig.legends[0].get_texts()]


@pytest.mark.slow
def test_partial_run_steps_0_1(tiny_cache, tmp_path):
    out = tmp_path / "partial"
    assert run_all.main(["--cache-dir", str(tiny_cache), "--results-dir", str(out),
                         "--steps", "0", "1"] + FAST_FLAGS) == 0
    assert figures.main(["--results-dir", str(out), "--quiet"]) == 0      # CLI, end to end
    assert sorted(p.name for p in out.glob("*.png")) == [figures.METHODS_FILE, figures.SCORES_FILE,
                                                         figures.SWEEP_FILE]
    check_png(out / figures.SWEEP_FILE)
    w, h = check_png(out / figures.SCORES_FILE, min_wh=(500, 200))
    assert h == round((2.1 * 2 + 1.9) * figures.DPI)     # two step rows
    a = analysis.analyze(out)
    ticks = [t.get_text() for t in figures.sweep_figure(a).axes[0].get_xticklabels()]
    assert ticks == ["0\nbase", "1\nadd_sycophant"]


def test_extra_step_is_drawn_with_its_record_name(run_copy, monkeypatch):
    spec = common.StepSpec(4, "ood_only", ("sycophant", "model_organism", "benchmark"), "?")
    monkeypatch.setattr(common, "EXTRA_STEPS", (spec,), raising=False)
    rec = json.loads((run_copy / "step_3_add_benchmark.json").read_text())
    rec.update(step=4, name="ood_only")
    write_record(run_copy / "step_4_ood_only.json", rec)
    shutil.copy(run_copy / "step_3_scores.npz", run_copy / "step_4_scores.npz")
    shutil.copy(run_copy / "step_3_probe.pkl", run_copy / "step_4_probe.pkl")
    a = analysis.analyze(run_copy)
    assert a.steps == [0, 1, 2, 3, 4]
    ticks = [t.get_text() for t in figures.sweep_figure(a).axes[0].get_xticklabels()]
    assert ticks[-1] == "4\nood_only"
    fig = figures.score_figure(a, figures._load_step_scores(run_copy, a))
    assert len(fig.axes) == 5 * len(a.sets)
    assert fig.axes[4 * len(a.sets)].get_ylabel().startswith("step 4\nood_only")


# ---- without matplotlib ------------------------------------------------------------------------
def test_without_matplotlib_nothing_is_written(run_copy, monkeypatch, capsys):
    monkeypatch.setattr(figures, "HAVE_MATPLOTLIB", False)
    assert figures.write_figures(run_copy) == []
    assert not list(run_copy.glob("*.png"))
    assert figures.main(["--results-dir", str(run_copy)]) == 0
    err = capsys.readouterr().err
    assert err.strip() == figures.MISSING_NOTE and "\n" not in err.strip()


@pytest.mark.slow
def test_figures_only_on_request_and_the_same_bytes(tiny_cache, tmp_path, capsys):
    args = ["--cache-dir", str(tiny_cache), "--steps", "0", "1", "--jobs", "1"]
    assert run_all.main(args + ["--results-dir", str(tmp_path / "plain")]) == 0
    assert not list((tmp_path / "plain").glob("*.png"))
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last == ("figures: " + hints.command("generate_report.py", "--results-dir",
                                                tmp_path / "plain") + " (or run_all.py --figures)")
    assert run_all.main(args + ["--results-dir", str(tmp_path / "fig"), "--figures",
                                "--quiet"]) == 0
    drawn = {p.name: p.read_bytes() for p in (tmp_path / "fig").glob("*.png")}
    assert sorted(drawn) == sorted([figures.SWEEP_FILE, figures.SCORES_FILE,
                                    figures.METHODS_FILE])
    later = {p.name: p.read_bytes() for p in figures.write_figures(tmp_path / "plain")}
    assert later == drawn                      # same numbers, same figures, whenever drawn


def test_write_outputs_draws_no_figures_when_the_report_fails(tiny_run, tmp_path, monkeypatch):
    from sweeplib import outputs
    a = analysis.analyze(tiny_run)

    def fail(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(outputs, "write_report", fail)
    with pytest.raises(OSError, match="disk full"):
        outputs.write_outputs(tmp_path, a)
    assert not list(tmp_path.glob("*.png"))
