"""Fit the method arms (methods.py) next to the sweep and write them into the results folder.

    python run_all.py --demo --methods lr massmean ksparse+rownorm

Every arm trains, at every step the run fits, on the reference's training mix of the run's
first seed: the same rows, loss weights and CV folds (probe.plan_step on the same splits), and
is scored on the same held-out rows. Three files, staged with the sweep's own files and
switched in with them:

    methods.json          arms, what each fit chose, AUROCs, config/inputs/run ids of the sweep
    methods_scores.npz    "<arm>|<step>|<set>" -> float64 scores of the set's held-out rows,
                          "<step>|<set>|row" -> those rows (the step files' rows)
    methods_probes.npz    "<arm>|<step>|w" / "|b": the linear probe in its representation;
                          "rep|srcstd|<dataset>|mean" / "|sd": srcstd's per-dataset statistics
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
from dataclasses import dataclass, replace

import numpy as np

import common
from sweeplib import data, execution, methods, pipeline, probe, results_io, results_read
from sweeplib.base import timed
from sweeplib.splits import eval_sets, training_rows

SCHEMA_VERSION = 1
FILES = {"json": "methods.json", "scores": "methods_scores.npz",
         "probes": "methods_probes.npz"}


@dataclass
class Job:
    """One step of the arms: the reference's plan (mix, folds, weights), its splits and the
    (dataset, rows) pairs its mix is made of."""
    plan: probe.Plan
    splits: dict
    parts: list


def jobs_for(ctx, steps, cfg):
    """The reference's plan of every sweep step, first seed (the sweep's own plan when this
    run made it)."""
    seed = cfg.seed
    splits = ctx.splits(seed)
    return [Job(ctx.plans.get((step.number, seed))
                or probe.plan_step(step, ctx.datasets, splits, cfg, seed), splits,
                training_rows(step, splits)) for step in steps]


def train_of(job, rep):
    """What a family sees at a step: the mix's rows in the representation, labels, weights,
    folds (never an eval label)."""
    mix = job.plan.mix
    sw = job.plan.sample_weight
    return methods.Train(methods.stack(rep, job.parts), mix.y,
                         np.ones(len(mix.y)) if sw is None else sw, job.plan.folds)


def fit_arm(ctx, arm, rep, jobs):
    """The arm's Linear at every job's step."""
    fam = methods.FAMILIES[arm.family]
    if fam.batch is not None and all(r.shift is None for r in rep.values()):
        if arm.representation == "raw":          # reuses the sweep's own fits at its C
            execute = lambda plans: pipeline.fit_plans(ctx, plans, ctx.datasets)[0]  # noqa: E731
            rep_datasets = ctx.datasets
        else:
            execute = lambda plans: execution.execute(plans, ctx.cfg.jobs)  # noqa: E731
            rep_datasets = {n: replace(d, X=rep[n].X) for n, d in ctx.datasets.items()}
        return fam.batch(jobs, rep_datasets, execute)
    return [fam.fit(train_of(job, rep), job.plan.cfg) for job in jobs]


def run(ctx, arms, steps, results_dir, cfg, records):
    """Fit and score every arm but the reference at the given sweep steps; stage the files.
    records: {step: record} of the sweep (their run ids tie the arms to the sweep). Arms are
    grouped by representation, each representation held only while its arms are fitted."""
    steps = [s for s in steps if s.number in common.STEP_BY_NUMBER]
    arms = [a for a in arms if a.name != methods.REFERENCE]
    if not steps or not arms:
        return None
    files, _ = results_read.scan(results_dir)  # a folder readers would refuse: before staging
    for k, paths in files.items():              # (this run's own steps replace theirs)
        if len(paths) > 1:
            results_read.step_records(results_dir)     # refuses two records for one step
        for path in paths if k not in records else ():
            results_read.read_record(path)
    jobs = jobs_for(ctx, steps, cfg)
    evals = eval_sets(ctx.datasets, jobs[0].splits)
    out = Outputs(jobs, evals, records)
    skipped, done = [], []
    for rep_name in dict.fromkeys(a.representation for a in arms):
        rep = methods.REPRESENTATIONS[rep_name].build(ctx.datasets, ctx.cfg)
        group = [a for a in arms if a.representation == rep_name]
        if rep is None:
            why = (f"no mean-pooled files (<stem>{methods.MEAN_SUFFIX}) in "
                   f"{data.layer_dir(ctx.cache_dir, ctx.layer).name}/"
                   if rep_name == "mean" else "representation unavailable")
            skipped += [{"name": a.name, "reason": why} for a in group]
            continue
        for arm in group:
            with timed(f"methods: {arm.family}"):
                out.add(arm, fit_arm(ctx, arm, rep, jobs), rep)
            done.append(arm)
        out.add_representation(rep_name, rep)
        del rep                                       # before the next one is built
    order = {a.name: i for i, a in enumerate(arms)}
    done.sort(key=lambda a: order[a.name])
    doc = {"schema_version": SCHEMA_VERSION, "reference": methods.REFERENCE,
           "methods": [_describe(a) for a in done], "skipped": skipped,
           "k_grid": list(methods.K_GRID), "c_grid": list(methods.C_GRID),
           "seed": cfg.seed, "steps": out.steps, "config": cfg.record(),
           "data_source": ctx.source, "layer": ctx.layer, "inputs": ctx.fingerprints,
           "mean_inputs": _mean_inputs(ctx) if any(a.representation == "mean" for a in done)
           else {}}
    for why in dict.fromkeys(s["reason"] for s in skipped):     # one note per reason
        names = [s["name"] for s in skipped if s["reason"] == why]
        print(f"note: method arm{'s' * (len(names) > 1)} {', '.join(names)} skipped: {why}",
              file=sys.stderr)
    if done:
        ctx.log(_summary_line(doc))
    _stage(results_dir, doc, out.scores, out.probes)
    return doc


class Outputs:
    """The arrays and per-step entries of methods.json, filled arm by arm."""

    def __init__(self, jobs, evals, records):
        self.jobs, self.evals = jobs, evals
        self.scores, self.probes, self.steps = {}, {}, {}
        for job in jobs:
            k = job.plan.step.number
            self.steps[str(k)] = {"run_id": records[k].get("run_id"), "arms": {}}
            for name, _, idx in evals:
                self.scores[f"{k}|{name}|row"] = np.asarray(idx)

    def add(self, arm, fits, rep):
        """An arm's fits (one per job): scores of every eval set, probe arrays, AUROCs."""
        for job, lin in zip(self.jobs, fits):
            k = job.plan.step.number
            auroc = {}
            for name, ds, idx in self.evals:
                s = lin.score(methods.stack(rep, [(name, idx)]))
                self.scores[f"{arm.name}|{k}|{name}"] = s
                y = ds.y[idx]
                auroc[name] = methods._auroc(y, s) if len(np.unique(y)) == 2 else None
            for key, a in lin.arrays().items():
                self.probes[f"{arm.name}|{k}|{key}"] = a
            self.steps[str(k)]["arms"][arm.name] = {"record": lin.record, "auroc": auroc}

    def add_representation(self, name, rep):
        """The arrays that define a representation (its portable form)."""
        for n, r in rep.items():
            for key, a in r.arrays.items():
                self.probes[f"rep|{name}|{n}|{key}"] = a


def _mean_inputs(ctx):
    """sha256 of the mean-pooled files the `mean` representation read."""
    return {str(methods.mean_path(d)): data.fingerprint(methods.mean_path(d))
            for d in ctx.datasets.values()}


def _describe(arm):
    """An arm's entry in methods.json."""
    return {"name": arm.name, "family": arm.family, "representation": arm.representation,
            "transductive": arm.transductive,
            "sees": f"{methods.FAMILIES[arm.family].sees}; "
                    f"{methods.REPRESENTATIONS[arm.representation].sees}"}


def _npz_bytes(arrays):
    """Arrays as uncompressed .npz bytes."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _stage(results_dir, doc, scores, probes):
    """Write the three files into the results folder's stage (switched in with the sweep)."""
    stage = results_io.stage(results_dir)
    files = {}
    for key, arrays in (("scores", scores), ("probes", probes)):
        blob = _npz_bytes(arrays)
        stage.write(FILES[key], blob)
        files[key], files[f"{key}_sha256"] = FILES[key], hashlib.sha256(blob).hexdigest()
    doc["files"] = files
    stage.write(FILES["json"], (json.dumps(doc, indent=2, default=float) + "\n").encode())
    results_io.done(stage)


def _summary_line(doc):
    """One console line: the arms and their AUROC at the first step on the benchmark."""
    k = min(doc["steps"], key=int)
    arms = doc["steps"][k]["arms"]
    shown = ", ".join(f"{n} {_fmt(a['auroc'].get('benchmark'))}" for n, a in arms.items())
    return f"methods at step {k} (benchmark AUROC): {shown}"


def _fmt(x):
    """3 decimals or n/a."""
    return "n/a" if x is None else f"{x:.3f}"
