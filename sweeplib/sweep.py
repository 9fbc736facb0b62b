"""Run the sweep and its controls on data loaded once, in pipeline order:
prepare (load, validate, audit) -> plan every step -> fit all probes in one parallel batch ->
evaluate -> save. run_all.py and the numbered step scripts call into this module.

    python run_all.py --demo                 # the sweep
    python run_all.py --demo --budget base   # + the fixed-budget arm (see run_all.py)
"""
from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

import common
from sweeplib import datacheck
from sweeplib import overlap
from sweeplib import probe
from sweeplib import results_io
from sweeplib import results_read
from sweeplib import sidecar
from common import DATASETS
from sweeplib.base import InputError, timed
from sweeplib import base
from sweeplib.config import build_parser, check_single_values, comparable, resolve_paths
from sweeplib import data
from sweeplib.splits import make_splits, training_rows

FORMAT_FEATURES = ("n_active", "mean_active", "max", "l1")


# --------------------------------------------------------------------------------------------
# Config and results folders
# --------------------------------------------------------------------------------------------
def make_config(args, cache_dir, feature_ids, layer=None, C=None, penalty=None):
    """The config recorded with every result (and compared across steps)."""
    return {
        "cache_dir": str(Path(cache_dir).resolve()), "layer": layer or args.layer,
        "C": C if C is not None else args.C[0], "penalty": penalty or args.penalty[0],
        "max_iter": args.max_iter, "tol": args.tol, "seed": args.seed,
        "eval_fraction": args.eval_fraction,
        "cv_folds": args.cv_folds,
        "feature_ids_file": str(args.feature_ids) if args.feature_ids else None,
        "feature_ids": feature_ids, "repeats": args.repeats,
        "dedup_split": args.dedup_split, "near_dup_threshold": args.near_dup_threshold,
        "class_weight": getattr(args, "class_weight", None),
        "source_weight": getattr(args, "source_weight", "proportional"),
        "extra_eval": list(getattr(args, "extra_eval", None) or []),
        "budget_n": None, "baseline": None,
        "jobs": args.jobs, "quiet": args.quiet,
        "dask_scheduler": getattr(args, "dask_scheduler", None),
        "sidecar": ("off" if getattr(args, "no_sidecar", False)
                    else str(args.sidecar_dir) if getattr(args, "sidecar_dir", None)
                    else "next to the .npy files"),
    }


def check_results_dir(results_dir, source):
    """Create the results folder and take its lock (finishing or cleaning what killed runs
    left, see results_io.py); refuse it when unwritable or holding the other data source."""
    results_dir = Path(results_dir)
    if results_dir.exists() and not results_dir.is_dir():
        raise InputError(f"{results_dir}: results path exists and is not a directory")
    created = not results_dir.exists()
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{results_dir}: cannot create results directory ({e.strerror})") from None
    results_io.lock(results_dir, created=created)
    for path in sorted(results_dir.glob("step_*.json")):
        try:
            other = results_read.read_json(path).get("data_source")
        except (InputError, AttributeError):
            continue
        if other and other != source:
            raise InputError(f"{path}: results folder holds {other!r} results; refusing to write "
                             f"{source!r} results next to them (use another --results-dir)")


def check_kept_steps(results_dir, todo, config, ctx):
    """Before fitting: the folder must be readable once this run's files are in. Refuse when a
    target path is a directory, a step file the run keeps is damaged, would make a second
    record of a step, or comes from another config, other inputs or data (a mixed folder)."""
    results_dir = Path(results_dir)
    written = {s.number: probe.output_paths(results_dir, s) for s in todo}
    for paths in written.values():
        for path in paths.values():
            if path.exists() and not path.is_file():
                raise InputError(f"{path}: exists and is not a regular file; this run would "
                                 "replace it (move it away)")
    ours = {"data_source": ctx.source, "layer": ctx.layer, "inputs": ctx.fingerprints,
            **comparable(config)}
    files, _ = results_read.scan(results_dir)
    for k, paths in sorted(files.items()):
        for path in paths:
            if k in written and path == written[k]["json"]:
                continue                              # replaced by this run
            rec = results_read.read_record(path)
            m = results_read.STEP_FILE.match(path.name)
            if (rec["step"], rec["name"]) != (int(m.group(1)), m.group(2)):
                continue                              # a renamed copy: readers ignore it
            if k in written:
                raise InputError(f"{path}: a second record of step {k} next to the "
                                 f"{written[k]['json'].name} this run writes; move it away")
            theirs = {"data_source": rec.get("data_source"), "layer": rec.get("layer"),
                      "inputs": rec.get("inputs"), **comparable(rec["config"])}
            diff = next((key for key in sorted(set(theirs) | set(ours))
                         if theirs.get(key) != ours.get(key)), None)
            if diff:
                show = "" if diff == "inputs" else (f" ({str(theirs.get(diff))[:30]}; this "
                                                    f"run: {str(ours.get(diff))[:30]})")
                raise InputError(f"{path}: this folder keeps step {k} from a run with another "
                                 f"'{diff}'{show}; this run would mix with it. Rerun that step "
                                 "too (--steps), or use another --results-dir")


def validate_steps(steps, datasets, splits, cv_folds=2):
    """Fail before anything is written: every step's mix must hold both classes, each with at
    least --cv-folds samples, and some varying feature."""
    for step in steps:
        rows = training_rows(step, splits)
        ys = np.concatenate([datasets[n].y[idx] for n, idx in rows])
        if len(np.unique(ys)) < 2:
            first = datasets[step.training[0]].files["labels"]
            raise InputError(f"{first}: training mix of step {step.number} "
                             f"({', '.join(step.training)}) has one class only; cannot train a probe")
        datacheck.check_mix(step, datasets, rows, cv_folds)


def _resumable(paths, config, fingerprints, step):
    """True when a step's saved outputs exist, form one verified unit (sha256, run id,
    recomputed metrics) and match config and inputs; a unit that does not is rerun (noted)."""
    if not all(p.exists() for p in paths.values()):
        return False
    folder = paths["json"].parent
    try:
        record = results_read.read_record(paths["json"])
        if record["step"] != step.number or record["name"] != step.slug:
            raise InputError(f"{paths['json']}: its record is step {record['step']}")
        results_read.load_unit(folder, step.number, paths["json"], record)
        if not results_read.probe_matches(folder, step.number, paths["json"], record):
            raise InputError(f"{paths['probe']}: sha256 does not match its step JSON")
    except InputError as e:
        print(f"note: --resume: {str(e).splitlines()[0]}; step {step.number} is rerun",
              file=sys.stderr)
        return False
    return (comparable(record["config"]) == comparable(config)
            and record.get("inputs") == fingerprints)


# --------------------------------------------------------------------------------------------
# Prepare: load once, validate, audit
# --------------------------------------------------------------------------------------------
@dataclass
class Context:
    """Data loaded once and what every run on it records."""
    args: object
    cache_dir: Path
    layer: int
    source: str
    datasets: dict
    feature_ids: list | None
    fingerprints: dict
    audit: dict | None
    log: object
    demo: dict | None = None                     # the demo generator's settings, if a demo
    fits: dict = field(default_factory=dict)     # fitted probes per (data, mix, seed, config)

    def leakage_audit(self):
        """The audit's result; waits for it when it still runs next to the fits."""
        if isinstance(self.audit, overlap.Job):
            job = self.audit
            with timed("leakage audit (wait)"):
                self.audit, lines = job.result()
            base.TIMINGS[f"leakage audit ({job.mode}, background)"] = job.seconds
            for line in lines:
                self.log(line)
        return self.audit


_DEFERRED = []     # warnings held back until the run's inputs have passed every check


def _deferring(log):
    """log, but warning lines are held back until flush_warnings() (errors come first)."""
    def out(*a, **k):
        """Hold warnings, pass the rest."""
        if a and str(a[0]).startswith("warning:"):
            _DEFERRED.append((log, str(a[0])))
        else:
            log(*a, **k)
    return out


def _stderr(message):
    """Print a line to stderr."""
    print(message, file=sys.stderr)


def flush_warnings():
    """Print the held-back warnings (each through its log; --quiet keeps warnings)."""
    while _DEFERRED:
        log, message = _DEFERRED.pop(0)
        log(message)


def quiet_log(args):
    """print; under --quiet only warnings (lines starting 'warning:', to stderr)."""
    if not args.quiet:
        return print

    def warnings_only(*a, **k):
        """Print warnings only."""
        if a and str(a[0]).startswith("warning:"):
            print(*a, file=sys.stderr)
    return warnings_only


def prepare(args, steps, layer=None, audit=True):
    """Load the datasets the steps need (and every eval set present) once; audit leakage."""
    log = quiet_log(args)
    _DEFERRED.clear()
    layer = layer or args.layer
    cache_dir, _ = resolve_paths(args)
    if args.demo:
        data.ensure_demo_cache(cache_dir, layer, args.quiet)
    needed = list(dict.fromkeys(n for s in steps for n in s.training))
    optional = [n for n in data.eval_set_names() if n not in needed]
    data.check_present(cache_dir, layer, needed + [n for n in optional
                                                     if DATASETS[n].regime == "extra"])
    absent = [n for n in optional if data.missing_files(cache_dir, layer, [n])]
    for n in absent:
        print(f"warning: {data.missing_files(cache_dir, layer, [n])[0]}: missing; eval set "
              f"{n} is skipped", file=sys.stderr)
    optional = [n for n in optional if n not in absent]
    source = data.data_source(cache_dir)
    if not getattr(args, "dask_scheduler", None) and "l1" in args.penalty:
        _warm_workers(args.jobs)        # L1 fits run in worker processes: spawn them now
    if source == "demo":
        log("*** SYNTHETIC DEMO DATA: numbers show how the tool behaves, not real findings ***")
    t0 = time.perf_counter()
    store = None if args.no_sidecar else sidecar.Store(args.sidecar_dir)
    with timed("load"):
        datasets, feature_ids, n_cache_features = data.load_cache(
            cache_dir, layer, needed + optional, args.feature_ids,
            warn=lambda m: print(m, file=sys.stderr), sidecar=store)
        datacheck.check_datasets(datasets, feature_ids, _deferring(_stderr))
        fingerprints = data.input_fingerprints(datasets, args.feature_ids)
    st = store.stats if store else None
    log(f"loaded {len(datasets)} datasets from {data.layer_dir(cache_dir, layer)} "
        f"({n_cache_features} features"
        f"{'' if feature_ids is None else f', using {len(feature_ids)}'}) "
        f"in {time.perf_counter() - t0:.1f}s; input fingerprints: sha256 of the whole of "
        f"{len(fingerprints)} files"
        + (f"; sparse sidecars: {st['hits']} read, {st['written']} written, "
           f"{st['bytes'] / 1e6:.0f} MB on disk" if st else ""))
    _DEFERRED.extend((_stderr, note) for note in (store.notes if store else []))  # printed
    # once the inputs pass every check, so that an error stays the first line
    ctx = Context(args, Path(cache_dir), layer, source, datasets, feature_ids, fingerprints,
                  None, log, data.demo_info(cache_dir))
    if audit:
        splits = make_splits(datasets, args.eval_fraction, args.seed, args.dedup_split)
        ctx.audit = overlap.start(_audit_lines, datasets, splits, args.near_dup_threshold)
    return ctx


def _audit_lines(datasets, splits, threshold):
    """The leakage audit and the lines it logs (printed in order when the result is used)."""
    lines = []
    return leakage_audit(datasets, splits, threshold, lines.append), lines


# --------------------------------------------------------------------------------------------
# Run steps
# --------------------------------------------------------------------------------------------
def run_steps(ctx, steps, results_dir, config, resume=False, datasets=None, label=""):
    """Plan, fit (one parallel batch) and save the given steps into results_dir."""
    datasets = datasets or ctx.datasets
    args, log = ctx.args, ctx.log
    check_results_dir(results_dir, ctx.source)
    seeds = [args.seed + r for r in range(args.repeats)]
    splits = {s: make_splits(datasets, args.eval_fraction, s, args.dedup_split)
              for s in seeds}
    for s in seeds:
        validate_steps(steps, datasets, splits[s], args.cv_folds)
    records, todo = {}, []
    for step in steps:
        paths = probe.output_paths(results_dir, step)
        if resume and _resumable(paths, config, ctx.fingerprints, step):
            log(f"{label}step {step.number} {step.slug}: up to date, skipped (--resume)")
            records[step.number] = json.loads(paths["json"].read_text())
        else:
            todo.append(step)
    if not todo:
        flush_warnings()
        return records
    check_kept_steps(results_dir, todo, config, ctx)
    with timed("plan"):
        plans = [probe.plan_step(step, datasets, splits[s], config, s)
                 for step in todo for s in seeds]
    flush_warnings()
    t = time.perf_counter()
    fitted, n_new = fit_plans(ctx, plans, datasets)
    log(f"{label}fitted {n_new * (config['cv_folds'] + 1)} probes for step(s) "
        f"{', '.join(str(s.number) for s in todo)} in {time.perf_counter() - t:.1f}s"
        + (f" ({len(plans) - n_new} mix(es) already fitted in this run)" if n_new < len(plans)
           else ""))
    run_id = f"{datetime.datetime.now():%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    warned = False
    for i, step in enumerate(todo):
        group = list(zip(plans[i * len(seeds):(i + 1) * len(seeds)],
                         fitted[i * len(seeds):(i + 1) * len(seeds)]))
        with timed("evaluate"):
            record, scores, pipe = probe.finish_step(group[0][0], group[0][1], datasets,
                                                     splits[seeds[0]])
            reps = [probe.repeat_summary(record, seeds[0])]
            for (plan, fit), s in zip(group[1:], seeds[1:]):
                rec_r, _, _ = probe.finish_step(plan, fit, datasets, splits[s])
                reps.append(probe.repeat_summary(rec_r, s))
        with timed("statistics"):
            probe.add_confidence_intervals(record["evaluation"], scores,
                                           record["thresholds"]["log_odds"])
        record["repeats"] = reps
        record["data_warnings"] = datacheck.data_warnings(
            datasets, datacheck.check_fit(label, step, scores))
        if not (record["converged"] and record["cv_converged"]) and not warned:
            print(f"warning: {label}step {step.number}: solver hit --max-iter "
                  f"{config['max_iter']} before converging (recorded as converged: false; "
                  "raise --max-iter or lower -C)", file=sys.stderr)
            warned = True
        record.update({
            "schema_version": probe.SCHEMA_VERSION, "run_id": run_id, "config": config,
            "data_source": ctx.source, "synthetic": ctx.source == "demo", "demo": ctx.demo,
            "layer": ctx.layer,
            "inputs": ctx.fingerprints, "split_sizes": {
                n: {"train": int(len(v.train)), "eval": int(len(v.eval))}
                for n, v in splits[seeds[0]].items()},
            "leakage_audit": ctx.leakage_audit(), "versions": probe.versions(),
            "timestamp": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        })
        with timed("write"):
            probe.save_step(results_io.stage(results_dir).path, step, record, scores, pipe,
                            run_id)
        records[step.number] = record
        ev = record["evaluation"]
        log(f"{label}step {step.number} {step.slug:<14} n={record['n_training_samples']:>5}  "
            f"cv={record['cv_auroc_mean']:.3f}  gold={_fmt(ev.get('gold_106', {}).get('auroc'))}"
            f"  benchmark={_fmt(ev.get('benchmark', {}).get('auroc'))}")
    results_io.done(results_io.stage(results_dir))
    return records


def fit_plans(ctx, plans, datasets):
    """Fit the plans; return (fits per plan, number of plans fitted now). Fits of the same
    mix, seed and config on the loaded data are made once per run (orderings and the transfer
    matrix repeat mixes of the sweep); plans on other data (format baseline) always fit."""
    if datasets is not ctx.datasets:
        with timed("fit + CV"):
            return probe.execute(plans, ctx.args.jobs), len(plans)
    keys = [(plan.step.training, plan.seed,
             json.dumps(comparable(plan.cfg), sort_keys=True, default=str))
            for plan in plans]
    first = {}                                   # a mix planned twice in one call fits once
    for i, key in enumerate(keys):
        if key not in ctx.fits:
            first.setdefault(key, i)
    new = list(first.values())
    with timed("fit + CV"):
        for i, fitted in zip(new, probe.execute([plans[i] for i in new], ctx.args.jobs)):
            ctx.fits[keys[i]] = fitted
    return [ctx.fits[key] for key in keys], len(new)


def _fmt(x):
    """3-decimal number or 'n/a'."""
    return "n/a" if x is None else f"{x:.3f}"


@contextlib.contextmanager
def execution(args):
    """Single-threaded BLAS (multi-threaded OpenBLAS was measured 25x slower per call on the
    vector-sized products here; parallelism comes from --jobs) and, with --dask-scheduler,
    joblib's dask backend on an existing cluster."""
    from threadpoolctl import threadpool_limits
    address = getattr(args, "dask_scheduler", None)
    with threadpool_limits(1):
        if not address:
            yield
            return
        try:
            from dask.distributed import Client
        except ImportError:
            raise InputError("--dask-scheduler: dask.distributed is not installed "
                             "(pip install 'dask[distributed]')") from None
        import joblib
        try:
            client = Client(address, timeout=10)
        except (OSError, TimeoutError) as e:
            raise InputError(f"--dask-scheduler: cannot reach {address} ({e})") from None
        try:
            with joblib.parallel_config(backend="dask"):
                yield
        finally:
            client.close()


def _import_probe():
    """Worker warm-up: unpickling this function imports sweep.py, hence the fitting code."""
    return os.getpid()


def _warm_workers(jobs):
    """Start the local worker processes in the background while data loads (they take
    seconds to spawn and import scikit-learn); None when fits run in this process."""
    import threading

    import joblib
    n = joblib.effective_n_jobs(jobs)
    if n <= 1:
        return None
    thread = threading.Thread(target=lambda: joblib.Parallel(n_jobs=jobs)(
        joblib.delayed(_import_probe)() for _ in range(n)), daemon=True)
    thread.start()
    return thread


def run_sweep(args, step_numbers, resume=False):
    """The main sweep: load once, run the given steps; return {step: record}."""
    steps = [common.step_spec(k) for k in step_numbers]
    _, results_dir = resolve_paths(args)
    with execution(args):
        ctx = prepare(args, steps)
        config = make_config(args, ctx.cache_dir, ctx.feature_ids)
        return run_steps(ctx, steps, results_dir, config, resume)


# --------------------------------------------------------------------------------------------
# Controls
# --------------------------------------------------------------------------------------------
def budget_size(spec, ctx):
    """Resolve --budget N|base to a sample count."""
    if spec == "base":
        first = common.STEPS[0]
        absent = [n for n in first.training if n not in ctx.datasets]
        if absent:
            raise InputError(f"--budget base: step 0's mix ({', '.join(first.training)}) is not "
                             "loaded by this run's steps; give a sample count or add step 0")
        splits = make_splits(ctx.datasets, ctx.args.eval_fraction, ctx.args.seed,
                                    ctx.args.dedup_split)
        return int(sum(len(idx) for _, idx in training_rows(first, splits)))
    try:
        n = int(spec)
    except ValueError:
        raise InputError(f"--budget: expected a sample count or 'base', got {spec!r}") from None
    if n < 2 * ctx.args.cv_folds:
        raise InputError(f"--budget: {n} samples is too few for {ctx.args.cv_folds}-fold CV")
    return n


def check_budget(ctx, steps, spec):
    """Resolve --budget and check every step's mix is large enough, before anything runs."""
    n = budget_size(spec, ctx)
    splits = make_splits(ctx.datasets, ctx.args.eval_fraction, ctx.args.seed,
                                ctx.args.dedup_split)
    for step in steps:
        size = sum(len(idx) for _, idx in training_rows(step, splits))
        if n > size:
            raise InputError(f"--budget: {n} samples requested, but step {step.number}'s mix "
                             f"has only {size}")
    cfg = {"cv_folds": ctx.args.cv_folds, "budget_n": n}
    for seed in range(ctx.args.seed, ctx.args.seed + ctx.args.repeats):
        seed_splits = make_splits(ctx.datasets, ctx.args.eval_fraction, seed,
                                         ctx.args.dedup_split)
        for step in steps:        # the arm's folds, before anything runs
            try:
                probe.plan_step(step, ctx.datasets, seed_splits, cfg, seed)
            except InputError as e:
                raise InputError(f"--budget: {n} samples are too few for step {step.number} "
                                 f"({str(e).split(': ', 1)[1]})") from None
    return n


def run_budget_arm(ctx, steps, results_dir, config, spec, resume=False):
    """Every step trained on exactly N samples drawn from its mix: only the mixture changes."""
    n = check_budget(ctx, steps, spec)
    cfg = dict(config, budget_n=n)
    return run_steps(ctx, steps, Path(results_dir) / "arm_budget", cfg, resume,
                     label="[budget] ")


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


def run_format_baseline(ctx, steps, results_dir, config, resume=False):
    """The same sweep with a probe that sees only format statistics of each sample."""
    cfg = dict(config, baseline="format", feature_ids=None)
    return run_steps(ctx, steps, Path(results_dir) / "baseline_format", cfg, resume,
                     datasets=format_datasets(ctx.datasets), label="[format] ")


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


def run_orderings(ctx, results_dir, config, resume=False):
    """The 6 orders of adding the OOD sources, each in orderings/<a>-<b>-<c>/."""
    out = {}
    for order in itertools.permutations(OOD_SOURCES):
        name = "-".join(order)
        out[name] = run_steps(ctx, ordering_steps(order), Path(results_dir) / "orderings" / name,
                              config, resume, label=f"[{name}] ")
    return out


def transfer_mixes(datasets):
    """Single sources and leave-one-distribution-out mixes present in the data."""
    sources = [n for n in ("train",) + OOD_SOURCES if n in datasets]
    mixes = [(f"only_{s}", (s,)) for s in sources]
    mixes += [(f"all_but_{s}", tuple(x for x in sources if x != s)) for s in sources]
    return mixes


def run_transfer(ctx, results_dir, config):
    """Train on each source alone and on all-but-one; evaluate every probe on every set."""
    args = ctx.args
    splits = make_splits(ctx.datasets, args.eval_fraction, args.seed, args.dedup_split)
    mixes = transfer_mixes(ctx.datasets)
    plans, names, cells = [], [], {}
    for i, (name, training) in enumerate(mixes):
        step = common.StepSpec(100 + i, name, training, f"transfer: train on {name}")
        ys = np.concatenate([ctx.datasets[n].y[splits[n].train] for n in training])
        if len(np.unique(ys)) < 2:
            cells[name] = {"note": "one class in the training data (all AF): no probe"}
            continue
        plans.append(probe.plan_step(step, ctx.datasets, splits, config, args.seed))
        names.append(name)
    fitted, _ = fit_plans(ctx, plans, ctx.datasets)
    evals = [n for n in data.eval_set_names() if n in ctx.datasets]
    for plan, fit, name in zip(plans, fitted, names):
        record, _, _ = probe.finish_step(plan, fit, ctx.datasets, splits)
        row = {}
        for ev in evals:
            e = record["evaluation"][ev]
            head = probe.headline_metric(e)
            row[ev] = {"headline": head, "value": e.get(head) if head else None,
                       "auroc": e.get("auroc"),
                       "auroc_vs_reference_negatives": e.get("auroc_vs_reference_negatives"),
                       "detection_rate": e.get("detection_rate"), "n": e["n_samples"]}
        cells[name] = row
    doc = {"train_mixes": [m for m, _ in mixes], "eval_sets": evals,
           "training": {m: list(t) for m, t in mixes}, "cells": cells, "config": config,
           "data_source": ctx.source, "layer": ctx.layer, "inputs": ctx.fingerprints}
    path = Path(results_dir) / "transfer_matrix.json"
    check_results_dir(results_dir, ctx.source)
    stage = results_io.stage(results_dir)
    stage.write(path.name, (json.dumps(doc, indent=2) + "\n").encode())
    results_io.done(stage)
    return doc, path


def grid_cells(args):
    """(layer, C, penalty) of every grid cell asked for."""
    layers = args.layers or [args.layer]
    return [(layer, C, pen) for layer in layers for C in args.C for pen in args.penalty]


def cell_dir(results_dir, layer, C, penalty):
    """Folder of one grid cell: never the main sweep's folder."""
    return Path(results_dir) / "grid" / f"layer_{layer}" / f"C_{C:g}" / f"penalty_{penalty}"


def run_grid(args, steps, results_dir, resume=False):
    """Every (layer, C, penalty) cell in its own folder; returns the summary rows."""
    log = quiet_log(args)
    cache_dir, _ = resolve_paths(args)
    rows = []
    layers = args.layers or [args.layer]
    for layer in layers:
        if not data.layer_dir(cache_dir, layer).is_dir():
            print(f"warning: {data.layer_dir(cache_dir, layer)}: layer not in the cache; "
                  "skipped", file=sys.stderr)
            continue
        ctx = prepare(args, steps, layer=layer)
        for C in args.C:
            for pen in args.penalty:
                cfg = make_config(args, ctx.cache_dir, ctx.feature_ids, layer, C, pen)
                label = f"[layer {layer} C {C:g} {pen}] "
                recs = run_steps(ctx, steps, cell_dir(results_dir, layer, C, pen), cfg, resume,
                                 label=label)
                last = recs[max(recs)]
                rows.append({"layer": layer, "C": C, "penalty": pen,
                             "path": str(cell_dir(results_dir, layer, C, pen).relative_to(results_dir)),
                             "last_step": max(recs), "cv_auroc": last["cv_auroc_mean"],
                             "n_nonzero_weights": last["n_nonzero_weights"],
                             "metrics": {n: probe.flat_metrics(e)
                                         for n, e in last["evaluation"].items()}})
        log(f"layer {layer}: {len(args.C) * len(args.penalty)} cell(s) done")
    if not rows:
        raise InputError(f"{cache_dir}: none of the layers {layers} is in the cache")
    check_results_dir(results_dir, ctx.source)
    stage = results_io.stage(results_dir)
    stage.write("grid_summary.json", (json.dumps({"cells": rows}, indent=2) + "\n").encode())
    results_io.done(stage)
    return rows


def main_step(number, argv=None):
    """Entry point of a numbered step script: run that step alone."""
    step = common.step_spec(number)
    args = build_parser(f"Step {number} ({step.slug}): {step.question}").parse_args(argv)

    def body():
        """Run the step; commit; say which derived outputs went stale."""
        check_single_values(args)
        results_io.claim(resolve_paths(args)[1])
        with data.extra_evals(args.extra_eval):
            run_sweep(args, [number])
        results_io.commit_all()
        results_io.note_removed()
        return 0
    return results_io.run_cli(body)


# --------------------------------------------------------------------------------------------
# Leakage audit
# --------------------------------------------------------------------------------------------
def support_candidates(A, B, threshold):
    """Rows of A that can reach cosine >= threshold with some row of B (exact bound).

    cos(a, b) <= |a restricted to supp(b)| / |a|, and supp(b) lies in the union of B's
    supports, so rows with less than threshold^2 of their squared mass there are skipped.
    """
    sq = A.multiply(A).tocsr()
    total = np.asarray(sq.sum(axis=1)).ravel()
    support = np.zeros(A.shape[1], dtype=np.float32)
    support[np.unique(B.indices)] = 1.0
    on = np.asarray(sq @ support).ravel()
    return np.flatnonzero((total == 0) | (on >= threshold ** 2 * total * (1 - 1e-6)))


def leakage_audit(datasets, splits, threshold, log=print):
    """Exact / near duplicate counts between every training part and every eval set."""
    from sweeplib import stats
    train_parts = {n: datasets[n].X[s.train] for n, s in splits.items() if len(s.train)}
    evals = {n: datasets[n].X[s.eval] for n, s in splits.items() if len(s.eval)}
    pairs = []
    for tn, A in train_parts.items():
        for en, B in evals.items():
            rows = support_candidates(A, B, threshold)
            c = (stats.duplicate_counts(A[rows], B, threshold=threshold) if len(rows)
                 else {"exact": 0, "near": 0, "near_rows": []})
            pairs.append({"train": tn, "eval": en, "exact": int(c["exact"]), "near": int(c["near"]),
                          "n_eval": int(B.shape[0]),
                          "near_rows": [int(i) for i in c["near_rows"]]})
    within = {}                         # duplicates inside an eval set shrink its effective n
    for n, B in evals.items():
        c = stats.duplicate_counts(B, B, threshold=threshold, same=True)
        within[n] = {"exact": int(c["exact"]), "near": int(c["near"]), "n": int(B.shape[0])}
    found = [p for p in pairs if p["exact"] or p["near"]]
    for p in found:
        log(f"warning: leakage audit: {p['exact']} exact / {p['near']} near duplicates of "
            f"training part '{p['train']}' in eval set '{p['eval']}' (of {p['n_eval']})")
    return {"threshold": threshold, "pairs": pairs, "within": within,
            "n_pairs_with_duplicates": len(found)}
