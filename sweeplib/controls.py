"""The controls of the sweep, each written into its own folder or file of the results folder:
the fixed-budget arm, the format-only baseline, the orderings of the OOD sources, the transfer
matrix, the (layer, C, penalty) grid and the solver check. Every one reuses the data loaded
once (pipeline.Context) and pipeline.run_steps.

    python run_all.py --demo --budget base --baseline format --orderings all --transfer
"""
from __future__ import annotations

import itertools
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

import common
from sweeplib import data, metrics, probe, results_io, solver_check
from sweeplib.base import InputError
from sweeplib.pipeline import check_results_dir, fit_plans, prepare, quiet_log, run_steps
from sweeplib.splits import check_budget_size, has_both_classes, mix_labels, training_rows


# --------------------------------------------------------------------------------------------
# Fixed budget
# --------------------------------------------------------------------------------------------
def budget_size(spec, ctx):
    """Resolve --budget N|base to a sample count."""
    if spec == "base":
        first = common.STEPS[0]
        absent = [n for n in first.training if n not in ctx.datasets]
        if absent:
            raise InputError(f"--budget base: step 0's mix ({', '.join(first.training)}) is not "
                             "loaded by this run's steps; give a sample count or add step 0")
        return int(sum(len(idx) for _, idx in training_rows(first, ctx.splits())))
    try:
        n = int(spec)
    except ValueError:
        raise InputError(f"--budget: expected a sample count or 'base', got {spec!r}") from None
    if n < 2 * ctx.cfg.cv_folds:
        raise InputError(f"--budget: {n} samples is too few for {ctx.cfg.cv_folds}-fold CV")
    return n


def check_budget(ctx, steps, spec):
    """Resolve --budget and check every step's mix is large enough, before anything runs."""
    n = budget_size(spec, ctx)
    for step in steps:
        check_budget_size(n, step, sum(len(idx) for _, idx in training_rows(step, ctx.splits())))
    cfg = replace(ctx.cfg, budget_n=n)
    for seed in range(ctx.cfg.seed, ctx.cfg.seed + ctx.cfg.repeats):
        seed_splits = ctx.splits(seed)
        for step in steps:        # the arm's folds, before anything runs
            try:
                probe.plan_step(step, ctx.datasets, seed_splits, cfg, seed)
            except InputError as e:
                raise InputError(f"--budget: {n} samples are too few for step {step.number} "
                                 f"({str(e).split(': ', 1)[1]})") from None
    return n


def run_budget_arm(ctx, steps, results_dir, cfg, spec, resume=False):
    """Every step trained on exactly N samples drawn from its mix: only the mixture changes."""
    n = check_budget(ctx, steps, spec)
    cfg = replace(cfg, budget_n=n)
    return run_steps(ctx, steps, Path(results_dir) / "arm_budget", cfg, resume,
                     label="[budget] ")


# --------------------------------------------------------------------------------------------
# Format-only baseline
# --------------------------------------------------------------------------------------------
def format_features(X):
    """Per-row format statistics: active features, mean active value, max, L1."""
    X = sp.csr_matrix(X)
    n_active = np.diff(X.indptr).astype(np.float64)
    l1 = np.asarray(abs(X).sum(axis=1)).ravel()
    mx = np.asarray(X.max(axis=1).todense()).ravel()
    mean = np.divide(l1, n_active, out=np.zeros_like(l1), where=n_active > 0)
    return sp.csr_matrix(np.column_stack([n_active, mean, mx, l1]).astype(np.float32))


def format_datasets(datasets):
    """The datasets with their activations replaced by format statistics only."""
    return {n: replace(d, X=format_features(d.X)) for n, d in datasets.items()}


def run_format_baseline(ctx, steps, results_dir, cfg, resume=False):
    """The same sweep with a probe that sees only format statistics of each sample."""
    cfg = replace(cfg, baseline="format", feature_ids=None)
    return run_steps(ctx, steps, Path(results_dir) / "baseline_format", cfg, resume,
                     datasets=format_datasets(ctx.datasets), label="[format] ")


# --------------------------------------------------------------------------------------------
# Orderings and the transfer matrix
# --------------------------------------------------------------------------------------------
def ordering_steps(order):
    """Steps 0..3 adding the three OOD sources in the given order."""
    steps, added = [common.STEPS[0]], {"train"}
    full = common.STEPS[-1].training
    for k, src in enumerate(order, start=1):
        added.add(src)
        # rows stay in the table's source order, so the last step equals the sweep's step 3
        steps.append(common.StepSpec(k, f"add_{src}", tuple(s for s in full if s in added),
                                     f"Does adding {src} (position {k}) move OOD performance?"))
    return steps


OOD_SOURCES = ("sycophant", "model_organism", "benchmark")


def run_orderings(ctx, results_dir, cfg, resume=False):
    """The 6 orders of adding the OOD sources, each in orderings/<a>-<b>-<c>/."""
    out = {}
    for order in itertools.permutations(OOD_SOURCES):
        name = "-".join(order)
        out[name] = run_steps(ctx, ordering_steps(order), Path(results_dir) / "orderings" / name,
                              cfg, resume, label=f"[{name}] ")
    return out


def transfer_mixes(datasets):
    """Single sources and leave-one-distribution-out mixes present in the data."""
    sources = [n for n in ("train",) + OOD_SOURCES if n in datasets]
    mixes = [(f"only_{s}", (s,)) for s in sources]
    mixes += [(f"all_but_{s}", tuple(x for x in sources if x != s)) for s in sources]
    return mixes


def run_transfer(ctx, results_dir, cfg):
    """Train on each source alone and on all-but-one; evaluate every probe on every set."""
    splits = ctx.splits(cfg.seed)
    mixes = transfer_mixes(ctx.datasets)
    plans, names, cells = [], [], {}
    for i, (name, training) in enumerate(mixes):
        step = common.StepSpec(100 + i, name, training, f"transfer: train on {name}")
        if not has_both_classes(mix_labels(ctx.datasets, training_rows(step, splits))):
            cells[name] = {"note": "one class in the training data (all AF): no probe"}
            continue
        plans.append(probe.plan_step(step, ctx.datasets, splits, cfg, cfg.seed))
        names.append(name)
    fitted, _ = fit_plans(ctx, plans, ctx.datasets)
    evals = data.eval_names(ctx.datasets)
    for plan, fit, name in zip(plans, fitted, names):
        record, scores, _ = metrics.finish_step(plan, fit, ctx.datasets, splits)
        metrics.add_confidence_intervals(record["evaluation"], scores,
                                         record["thresholds"]["log_odds"])
        row = {}
        for ev in evals:
            e = record["evaluation"][ev]
            head = metrics.headline_metric(e)
            row[ev] = {"headline": head, "value": e.get(head) if head else None,
                       "ci": (e.get("ci") or {}).get(head) if head else None,
                       "auroc": e.get("auroc"),
                       "auroc_vs_reference_negatives": e.get("auroc_vs_reference_negatives"),
                       "detection_rate": e.get("detection_rate"), "n": e["n_samples"]}
        cells[name] = row
    doc = {"train_mixes": [m for m, _ in mixes], "eval_sets": evals,
           "training": {m: list(t) for m, t in mixes}, "cells": cells, "config": cfg.record(),
           "data_source": ctx.source, "layer": ctx.layer, "inputs": ctx.fingerprints}
    path = Path(results_dir) / "transfer_matrix.json"
    check_results_dir(results_dir, ctx.source)
    stage = results_io.stage(results_dir)
    stage.write(path.name, (json.dumps(doc, indent=2) + "\n").encode())
    results_io.done(stage)
    return doc, path


# --------------------------------------------------------------------------------------------
# Grid and solver check
# --------------------------------------------------------------------------------------------
def cell_dir(results_dir, layer, C, penalty):
    """Folder of one grid cell: never the main sweep's folder."""
    return Path(results_dir) / "grid" / f"layer_{layer}" / f"C_{C:g}" / f"penalty_{penalty}"


def run_grid(cfg, steps, results_dir, resume=False):
    """Every (layer, C, penalty) cell in its own folder; returns the summary rows."""
    log = quiet_log(cfg.quiet)
    cache_dir = Path(cfg.cache_dir)
    rows = []
    layers = list(cfg.grid_layers) or [cfg.layer]
    for layer in layers:
        if not data.layer_dir(cache_dir, layer).is_dir():
            print(f"warning: {data.layer_dir(cache_dir, layer)}: layer not in the cache; "
                  "skipped", file=sys.stderr)
            continue
        with prepare(replace(cfg, layer=layer), steps) as ctx:
            source = ctx.source
            for C in cfg.grid_C:
                for pen in cfg.grid_penalty:
                    rows.append(_grid_cell(ctx, steps, results_dir,
                                           replace(ctx.cfg, C=C, penalty=pen), resume))
        log(f"layer {layer}: {len(cfg.grid_C) * len(cfg.grid_penalty)} cell(s) done")
    if not rows:
        raise InputError(f"{cache_dir}: none of the layers {layers} is in the cache")
    check_results_dir(results_dir, source)
    stage = results_io.stage(results_dir)
    stage.write("grid_summary.json", (json.dumps({"cells": rows}, indent=2) + "\n").encode())
    results_io.done(stage)
    return rows


def _grid_cell(ctx, steps, results_dir, cfg, resume):
    """Run one grid cell in its folder; its row of grid_summary.json."""
    folder = cell_dir(results_dir, cfg.layer, cfg.C, cfg.penalty)
    recs = run_steps(ctx, steps, folder, cfg, resume,
                     label=f"[layer {cfg.layer} C {cfg.C:g} {cfg.penalty}] ")
    last = recs[max(recs)]
    return {"layer": cfg.layer, "C": cfg.C, "penalty": cfg.penalty,
            "path": str(folder.relative_to(results_dir)), "last_step": max(recs),
            "cv_auroc": last["cv_auroc_mean"], "n_nonzero_weights": last["n_nonzero_weights"],
            "metrics": {n: metrics.flat_metrics(e) for n, e in last["evaluation"].items()}}


def run_solver_check(ctx, steps, results_dir, cfg, tol=solver_check.CHECK_TOL, resume=False):
    """The sweep's steps refitted at a tight tolerance into <results_dir>/solver_check/."""
    cfg = replace(cfg, tol=tol, max_iter=max(cfg.max_iter, solver_check.CHECK_MAX_ITER))
    return run_steps(ctx, steps, Path(results_dir) / solver_check.FOLDER, cfg, resume,
                     label="[solver check] ")
