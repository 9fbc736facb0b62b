"""Run the sweep on data loaded once, in pipeline order: prepare (load, validate, audit) ->
plan every step -> fit all probes in one batch -> evaluate -> save. run_all.py and the
numbered step scripts call into this module; the controls (controls.py) reuse it.

    python run_all.py --demo                 # the sweep
    python 00_base_probe.py --demo           # one step (runner.main_step)
"""
from __future__ import annotations

import datetime
import json
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import common
from sweeplib import (audit, data, datacheck, execution, metrics, probe, results_io,
                      results_read, sidecar, solver_check, stepfiles)
from sweeplib.base import InputError, timed
from sweeplib import hints
from sweeplib.config import RunConfig, comparable
from sweeplib.splits import check_both_classes, make_splits, training_rows


# --------------------------------------------------------------------------------------------
# Config and results folders
# --------------------------------------------------------------------------------------------
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


def check_kept_steps(results_dir, todo, cfg, ctx):
    """Before fitting: the folder must be readable once this run's files are in. Refuse when a
    target path is a directory, a step file the run keeps is damaged, would make a second
    record of a step, or comes from another config, other inputs or data (a mixed folder)."""
    results_dir = Path(results_dir)
    written = {s.number: stepfiles.output_paths(results_dir, s) for s in todo}
    for paths in written.values():
        for path in paths.values():
            if path.exists() and not path.is_file():
                raise InputError(f"{path}: exists and is not a regular file; this run would "
                                 "replace it (move it away)")
    ours = {"data_source": ctx.source, "layer": ctx.layer, "inputs": ctx.fingerprints,
            **comparable(cfg.record())}
    files, _ = results_read.scan(results_dir)
    mixed = []                                        # (path, step, differing key, shown)
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
                mixed.append((path, k, diff, show))
    if mixed:
        path, k, diff, show = mixed[0]
        rerun = hints.rerun_command(cfg.argv, set(written) | {m[1] for m in mixed})
        raise InputError(f"{path}: this folder keeps step {k} from a run with another "
                         f"'{diff}'{show}; this run would mix with it. Rerun those steps too "
                         f"({rerun}), or use another --results-dir")

def validate_steps(steps, datasets, splits, cv_folds=2):
    """Fail before anything is written: every step's mix must hold both classes, each with at
    least --cv-folds samples, and some varying feature."""
    for step in steps:
        rows = training_rows(step, splits)
        check_both_classes(step, datasets, rows)
        datacheck.check_mix(step, datasets, rows, cv_folds)


def _resumable(paths, cfg, fingerprints, step):
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
        if "record_sha256" not in record["files"]:
            raise InputError(f"{paths['json']}: carries no record_sha256, so what its scores "
                             "cannot show (CV AUROC, training mix) is not trusted")
        if not results_read.probe_matches(folder, step.number, paths["json"], record):
            raise InputError(f"{paths['probe']}: sha256 does not match its step JSON")
    except InputError as e:
        print(f"note: --resume: {str(e).splitlines()[0]}; step {step.number} is rerun",
              file=sys.stderr)
        return False
    return (comparable(record["config"]) == comparable(cfg.record())
            and record.get("inputs") == fingerprints)


# --------------------------------------------------------------------------------------------
# Prepare: load once, validate, audit
# --------------------------------------------------------------------------------------------
@dataclass
class Context:
    """Data loaded once and what every run on it records. cfg: the run's configuration, with
    the feature ids read from --feature-ids."""
    cfg: RunConfig
    cache_dir: Path
    layer: int
    source: str
    datasets: dict
    fingerprints: dict
    audit: dict | None
    log: object
    demo: dict | None = None                     # the demo generator's settings, if a demo
    audit_wanted: bool = True                    # start_audit() starts it (prepare(audit=))
    fits: dict = field(default_factory=dict)     # fitted probes per (data, mix, seed, config)
    made_splits: list = field(default_factory=list)   # [(datasets, seed, splits)] made so far
    plans: dict = field(default_factory=dict)    # (step number, seed) -> probe.Plan of the
    #                                              main sweep on the loaded data (method arms)

    def splits(self, seed=None, datasets=None):
        """The split of the loaded datasets (or of other datasets with the same rows: the
        format baseline's) for a seed (default: the run's first), made once per run."""
        seed = self.cfg.seed if seed is None else seed
        datasets = self.datasets if datasets is None else datasets
        for d, s, splits in self.made_splits:
            if d is datasets and s == seed:
                return splits
        splits = make_splits(datasets, self.cfg.eval_fraction, seed, self.cfg.dedup_split)
        datacheck.check_held_out(datasets, splits, _deferring(_stderr))
        self.made_splits.append((datasets, seed, splits))
        return splits

    def start_audit(self, results_dir=None):
        """The leakage audit (audit.py: computed, or the audit of a record in results_dir
        made from the same inputs and split), once; only a run that fits makes it (a
        --resume run with every step up to date never does). Its lines are logged when it
        is used (leakage_audit)."""
        if self.audit is None and self.audit_wanted:
            self.audit = audit.run(self.datasets, self.splits(), self.cfg.near_dup_threshold,
                                   results_dir, audit.key(self))

    def close(self):
        """The context can no longer give the audit afterwards."""
        self.audit_wanted = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def leakage_audit(self):
        """The audit's result (made here when no fit made it); its lines are logged once."""
        self.start_audit()
        if isinstance(self.audit, tuple):                      # (audit, lines) not logged yet
            self.audit, lines = self.audit
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


def quiet_log(quiet):
    """print; warnings (lines starting 'warning:') always to stderr, the rest to stdout and
    only without --quiet."""
    def log(*a, **k):
        """Print one line where it belongs."""
        if a and str(a[0]).lstrip("\n").startswith("warning:"):
            print(*a, file=sys.stderr)
        elif not quiet:
            print(*a, **k)
    return log


def prepare(cfg, steps, audit=True):
    """Load the datasets the steps need (and every eval set present) once; the leakage audit
    starts with the first fits (Context.start_audit). Use the context in a `with` block: its
    end stops an audit still running."""
    log = quiet_log(cfg.quiet)
    _DEFERRED.clear()
    layer, cache_dir = cfg.layer, Path(cfg.cache_dir)
    if cfg.demo:
        data.ensure_demo_cache(cache_dir, layer, cfg.quiet)
    table = data.dataset_table(cfg.extra_eval)
    needed = list(dict.fromkeys(n for s in steps for n in s.training))
    optional = [n for n, d in table.items() if d.role in ("eval", "split") and n not in needed]
    data.check_present(cache_dir, layer, needed + [n for n in optional
                                                   if table[n].regime == "extra"], table)
    absent = [n for n in optional if data.missing_files(cache_dir, layer, [n], table)]
    for n in absent:
        print(f"warning: {data.missing_files(cache_dir, layer, [n], table)[0]}: missing; eval "
              f"set {n} is skipped", file=sys.stderr)
    optional = [n for n in optional if n not in absent]
    source = data.data_source(cache_dir)
    if not cfg.dask_scheduler and "l1" in cfg.grid_penalty:
        execution.warm_workers(cfg.jobs)    # L1 fits run in worker processes: spawn them now
    if source == "demo":
        log("*** SYNTHETIC DEMO DATA: numbers show how the tool behaves, not real findings ***")
    t0 = time.perf_counter()
    store = sidecar.Store(cfg.sidecar_dir) if cfg.use_sidecar else None
    with timed("load"):
        datasets, feature_ids, n_cache_features = data.load_cache(
            cache_dir, layer, needed + optional, cfg.feature_ids_path,
            warn=lambda m: print(m, file=sys.stderr), sidecar=store, table=table)
        datacheck.check_datasets(datasets, feature_ids, _deferring(_stderr))
        fingerprints = data.input_fingerprints(datasets, cfg.feature_ids_path,
                                               store.fingerprints if store else None)
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
    cfg = replace(cfg, feature_ids=None if feature_ids is None else tuple(feature_ids))
    return Context(cfg, cache_dir, layer, source, datasets, fingerprints, None, log,
                   data.demo_info(cache_dir), audit_wanted=audit)


# --------------------------------------------------------------------------------------------
# Run steps
# --------------------------------------------------------------------------------------------
def run_steps(ctx, steps, results_dir, cfg, resume=False, datasets=None, label=""):
    """Plan, fit (one parallel batch) and save the given steps into results_dir, with the
    configuration cfg (ctx.cfg, or a control's copy of it)."""
    datasets = datasets or ctx.datasets
    check_results_dir(results_dir, ctx.source)
    seeds = [cfg.seed + r for r in range(cfg.repeats)]
    splits = {s: ctx.splits(s, datasets) for s in seeds}
    for s in seeds:
        validate_steps(steps, datasets, splits[s], cfg.cv_folds)
    records, todo = _up_to_date(ctx, steps, results_dir, cfg, resume, label)
    if not todo:
        flush_warnings()
        return records
    check_kept_steps(results_dir, todo, cfg, ctx)
    ctx.start_audit(results_dir)       # before the planning and the fits
    with timed("plan"):
        plans = [probe.plan_step(step, datasets, splits[s], cfg, s)
                 for step in todo for s in seeds]
    if datasets is ctx.datasets and cfg == ctx.cfg:
        ctx.plans.update(((p.step.number, p.seed), p) for p in plans)
    flush_warnings()
    t = time.perf_counter()
    fitted, n_new = fit_plans(ctx, plans, datasets, _progress(ctx.log, label, plans, t))
    ctx.log(f"{label}fitted {n_new * (cfg.cv_folds + 1)} probes for step(s) "
            f"{', '.join(str(s.number) for s in todo)} in {time.perf_counter() - t:.1f}s"
            + (f" ({len(plans) - n_new} mix(es) already fitted in this run)"
               if n_new < len(plans) else ""))
    run_id = f"{datetime.datetime.now():%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    stopped = {}                       # step -> stop reasons of its fits that did not converge
    for i, step in enumerate(todo):
        group = list(zip(plans[i * len(seeds):(i + 1) * len(seeds)],
                         fitted[i * len(seeds):(i + 1) * len(seeds)]))
        record, scores, pipe = _step_record(ctx, step, group, splits, datasets, label, stopped)
        record.update(_run_fields(ctx, cfg, run_id, splits[seeds[0]]))
        with timed("write"):
            stepfiles.save_step(results_io.stage(results_dir).path, step, record, scores, pipe,
                                run_id)
        records[step.number] = record
        ev = record["evaluation"]
        ctx.log(f"{label}step {step.number} {step.slug:<14} "
                f"n={record['n_training_samples']:>5}  cv={record['cv_auroc_mean']:.3f}  "
                f"gold={_fmt(ev.get('gold_106', {}).get('auroc'))}  "
                f"benchmark={_fmt(ev.get('benchmark', {}).get('auroc'))}")
    _warn_unconverged(label, stopped, cfg.max_iter)
    results_io.done(results_io.stage(results_dir))
    return records


def _up_to_date(ctx, steps, results_dir, cfg, resume, label):
    """({step: record} of the steps --resume keeps, [steps to run])."""
    records, todo = {}, []
    for step in steps:
        paths = stepfiles.output_paths(results_dir, step)
        if resume and _resumable(paths, cfg, ctx.fingerprints, step):
            ctx.log(f"{label}step {step.number} {step.slug}: up to date, skipped (--resume)")
            records[step.number] = json.loads(paths["json"].read_text())
        else:
            todo.append(step)
    return records, todo


def _progress(log, label, plans, t0):
    """A callback for the fits (execution.execute): one line when every fit of a step (its
    final probe and CV folds, every seed) has finished, through the quiet-aware log."""
    left = Counter(plan.step.number for plan in plans)
    n_fits = Counter()
    for plan in plans:
        n_fits[plan.step.number] += len(plan.folds) + 1

    finished, order = {}, sorted(left)

    def done(plan):
        """A plan's fits have finished; print each finished step in step order."""
        k = plan.step.number
        left[k] -= 1
        if left[k] == 0:
            finished[k] = (f"{label}step {k} {plan.step.slug}: {n_fits[k]} fits done "
                           f"({time.perf_counter() - t0:.1f}s)")
            while order and order[0] in finished:
                log(finished.pop(order.pop(0)))
    return done


def _step_record(ctx, step, group, splits, datasets, label, stopped):
    """The record, scores and probe of one step from its fitted plans (one per seed: the
    first seed's is the step's, the others its repeats); the stop reasons of its first seed's
    fits that did not converge go into stopped[step] (one warning per batch)."""
    seeds = [plan.seed for plan, _ in group]
    with timed("evaluate"):
        record, scores, pipe = metrics.finish_step(group[0][0], group[0][1], datasets,
                                                   splits[seeds[0]])
        reps = [metrics.repeat_summary(record, seeds[0], scores)]
        for (plan, fit), s in zip(group[1:], seeds[1:]):
            rec_r, scores_r, _ = metrics.finish_step(plan, fit, datasets, splits[s])
            reps.append(metrics.repeat_summary(rec_r, s, scores_r))
    with timed("statistics"):
        metrics.add_confidence_intervals(record["evaluation"], scores,
                                         record["thresholds"]["log_odds"])
    record["repeats"] = reps
    record["data_warnings"] = datacheck.data_warnings(
        datasets, datacheck.check_fit(label, step, scores))
    sol = record["solver"]
    bad = [(what, rec) for what, rec in [("final fit", sol["final"])]
           + [("CV fold", rec) for rec in sol["cv_folds"]] if not rec.get("converged", True)]
    if bad or not (record["converged"] and record["cv_converged"]):
        stopped[step.number] = bad or [("fit", {})]
    return record, scores, pipe


def _warn_unconverged(label, stopped, max_iter):
    """One warning for the fits of a batch that stopped before converging: which, and why."""
    if not stopped:
        return
    where, reasons = [], Counter()
    for k, bad in sorted(stopped.items()):
        n_cv = sum(what == "CV fold" for what, _ in bad)
        parts = (["final fit"] if any(what == "final fit" for what, _ in bad) else []) + (
            [f"{n_cv} CV fold{'s' * (n_cv > 1)}"] if n_cv else [])
        where.append(f"step {k}: {' + '.join(parts) or 'some fits'}")
        reasons.update(solver_check.stop_label(rec, max_iter) for _, rec in bad if rec)
    why = ", ".join(f"{n} {r}" if r != solver_check.STOP_MAX_ITER else
                    f"{n} hit the --max-iter {max_iter} cap" for r, n in reasons.items())
    print(f"warning: {label}solver stopped before converging in {'; '.join(where)}"
          f"{f' ({why})' if why else ''}; recorded as converged: false. Raise --max-iter; "
          "the report's Solver section shows how far each fit stopped from its optimum",
          file=sys.stderr)


def _run_fields(ctx, cfg, run_id, splits):
    """What every step record of a run says about the run: config, data, inputs, versions."""
    return {
        "schema_version": stepfiles.SCHEMA_VERSION, "run_id": run_id, "config": cfg.record(),
        "data_source": ctx.source, "synthetic": ctx.source == "demo", "demo": ctx.demo,
        "layer": ctx.layer, "inputs": ctx.fingerprints,
        "split_sizes": {n: {"train": int(len(v.train)), "eval": int(len(v.eval))}
                        for n, v in splits.items()},
        "leakage_audit": ctx.leakage_audit(), "versions": stepfiles.versions(),
        "timestamp": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def fit_plans(ctx, plans, datasets, progress=None):
    """Fit the plans; return (fits per plan, number of plans fitted now). Fits of the same
    mix, seed and config on the loaded data are made once per run (orderings and the transfer
    matrix repeat mixes of the sweep); plans on other data (format baseline) always fit.
    progress(plan) is called as each plan's fits finish."""
    if datasets is not ctx.datasets:
        with timed("fit + CV"):
            return execution.execute(plans, ctx.cfg.jobs, progress), len(plans)
    keys = [(plan.step.training, plan.seed,
             json.dumps(comparable(plan.cfg.record()), sort_keys=True, default=str))
            for plan in plans]
    first = {}                                   # a mix planned twice in one call fits once
    for i, key in enumerate(keys):
        if key not in ctx.fits:
            first.setdefault(key, i)
    new = list(first.values())
    with timed("fit + CV"):
        for i, fitted in zip(new, execution.execute([plans[i] for i in new], ctx.cfg.jobs,
                                                    progress)):
            ctx.fits[keys[i]] = fitted
    return [ctx.fits[key] for key in keys], len(new)


def _fmt(x):
    """3-decimal number or 'n/a'."""
    return "n/a" if x is None else f"{x:.3f}"


def run_sweep(cfg, step_numbers, resume=False):
    """The main sweep: load once, run the given steps; return {step: record}."""
    steps = [common.step_spec(k) for k in step_numbers]
    with execution.context(cfg), prepare(cfg, steps) as ctx:
        return run_steps(ctx, steps, cfg.results_dir, ctx.cfg, resume)

