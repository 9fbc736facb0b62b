"""Where the fits run: L2 plans in lockstep in this process (lockstep.py; --jobs = threads of
its products), L1 (saga) plans and every plan under --dask-scheduler as one joblib task per fit.

    with context(cfg):                     # single-threaded BLAS; joblib's dask backend
        fitted = execute(plans, jobs)      # per plan: full-mix fit first, then the folds

Local worker processes map the datasets from .npy files written once per batch under /dev/shm
(SharedMatrices); remote tasks get the matrices themselves.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import joblib
import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from sweeplib import lockstep, owned, solver_check
from sweeplib.base import InputError, WriteError
from sweeplib.probe import decision, fit, fit_l2, make_pipeline, set_l2_solution


# --------------------------------------------------------------------------------------------
# The execution context: BLAS threads, joblib backend
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def context(cfg):
    """Single-threaded BLAS (multi-threaded OpenBLAS was measured 25x slower per call on the
    vector-sized products here; parallelism comes from --jobs) and, with --dask-scheduler,
    joblib's dask backend on an existing cluster."""
    from threadpoolctl import threadpool_limits
    address = cfg.dask_scheduler
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
        except (OSError, TimeoutError, ValueError, TypeError) as e:
            raise InputError(f"--dask-scheduler: cannot reach {address} ({e})") from None
        try:
            with joblib.parallel_config(backend="dask"):
                yield
        finally:
            client.close()


# Local (loky) worker processes of a run killed with SIGKILL, which cannot stop them, stayed
# alive for joblib's idle timeout (300 s) plus loky's 30 s wait for the dead parent. They now
# watch their parent (PARENT_POLL seconds) and exit once it is gone; idle ones exit sooner too.
IDLE_WORKER_TIMEOUT = 30
PARENT_POLL = 0.5


@contextlib.contextmanager
def short_lived_workers():
    """Inside: joblib's local process backend (loky, the default) with workers that exit when
    this process is gone (_watch_parent) or after IDLE_WORKER_TIMEOUT idle seconds; any other
    backend (dask, threads) as it is. The setting is per thread; every Parallel of a run uses
    the same one (loky restarts its executor when it changes)."""
    import joblib
    if type(joblib.parallel.get_active_backend()[0]).__name__ != "LokyBackend":
        yield
        return
    _quiet_resource_tracker()
    with joblib.parallel_config(backend="loky", idle_worker_timeout=IDLE_WORKER_TIMEOUT,
                                initializer=_watch_parent, initargs=(os.getpid(),)):
        yield


TRACKER_FILTER = "ignore:resource_tracker:UserWarning"


def _quiet_resource_tracker():
    """loky's resource tracker (a process the workers start, sharing this run's stderr) warns
    about "leaked" objects when an interrupted run's workers are killed, after the run's own
    one-line message; it cleans them up either way. Its warnings, and only those (the filter
    matches messages that start with 'resource_tracker'), are ignored in the processes this
    run starts from now on."""
    have = os.environ.get("PYTHONWARNINGS", "")
    if TRACKER_FILTER not in have.split(","):
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [have, TRACKER_FILTER]))


def _watch_parent(parent):
    """Worker initializer: a daemon thread that ends the worker once its parent process (the
    run) is gone; the worker's parent is the run itself, so a changed ppid means it died."""
    import threading
    import time

    def watch():
        """Poll the parent pid; leave at once when the worker was reparented."""
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        os._exit(0)
    threading.Thread(target=watch, name="sweep-parent-watch", daemon=True).start()


def _import_probe():
    """Worker warm-up: unpickling this function imports execution.py, hence the fitting code."""
    return os.getpid()


def _warm(jobs, n):
    """Start n local workers (the warm-up thread's body)."""
    import joblib
    with short_lived_workers():
        joblib.Parallel(n_jobs=jobs, max_nbytes=None)(joblib.delayed(_import_probe)() for _ in range(n))


def warm_workers(jobs):
    """Start the local worker processes in the background while data loads (they take
    seconds to spawn and import scikit-learn); None when fits run in this process."""
    import threading

    import joblib
    n = joblib.effective_n_jobs(jobs)
    if n <= 1:
        return None
    thread = threading.Thread(target=_warm, args=(jobs, n), daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------------------------
# Per-fit tasks (L1, dask)
# --------------------------------------------------------------------------------------------
class SharedMatrices:
    """The datasets' CSR arrays written once as .npy files that worker processes map, so a
    task carries file names and row indices instead of a pickled (and hashed) matrix."""

    def __init__(self, matrices):
        shm = Path("/dev/shm")
        where = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
        owned.remove_stale(where, "sweep-")       # this tool's, of a killed run (RAM on /dev/shm)
        try:
            self.folder = str(owned.make_dir(where, "sweep-", "worker data"))
        except OSError as e:
            raise WriteError(f"{where}: cannot write ({e.strerror or e})") from None
        self.refs = {}
        try:
            for k, A in enumerate(matrices):
                for name in ("data", "indices", "indptr"):
                    np.save(os.path.join(self.folder, f"{k}_{name}.npy"), getattr(A, name))
                self.refs[id(A)] = (self.folder, k, A.shape)
        except OSError as e:
            self.close()
            raise WriteError(f"{self.folder}: cannot write ({e.strerror or e})") from None
        except BaseException:             # an interrupt while the files are written
            self.close()
            raise

    def parts(self, mix):
        """The mix's (matrix reference, row indices) parts."""
        return [(self.refs[id(A)], idx) for A, idx in mix.parts]

    def close(self):
        """Remove the files (mapped copies stay valid until their tasks finish)."""
        shutil.rmtree(self.folder, ignore_errors=True)


_MAPPED = {}


def _matrix(ref):
    """A matrix given in-process, or mapped from a SharedMatrices reference (cached)."""
    if sp.issparse(ref):
        return ref
    folder, k, shape = ref
    if (folder, k) not in _MAPPED:
        for key in [key for key in _MAPPED if key[0] != folder]:
            del _MAPPED[key]                      # files of an earlier batch
        arrays = [np.load(os.path.join(folder, f"{k}_{n}.npy"), mmap_mode="r")
                  for n in ("data", "indices", "indptr")]
        _MAPPED[(folder, k)] = sp.csr_matrix(tuple(arrays), shape=shape, copy=False)
    return _MAPPED[(folder, k)]


def rows_matrix(parts, subset, rows):
    """Rows `rows` (ascending) of the mix formed by parts (and a fixed-budget subset), built
    with one copy straight from the datasets."""
    lengths = [len(idx) for _, idx in parts]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    global_rows = rows if subset is None else subset[rows]
    blocks = []
    for (ref, idx), lo, hi in zip(parts, offsets[:-1], offsets[1:]):
        sel = global_rows[(global_rows >= lo) & (global_rows < hi)] - lo
        if len(sel):
            blocks.append(_matrix(ref)[idx[sel]])
    return sp.vstack(blocks, format="csr") if len(blocks) > 1 else blocks[0].tocsr()


def fit_task(cfg, seed, parts, subset, y, rows, score_rows, sample_weight):
    """One unit of work: fit a fresh probe on some rows of a mix (single-threaded BLAS) and
    score `score_rows` with it; returns (pipe, converged, n_iter, float64 scores, solver).

    Every fit starts from zero weights: warm starting a fold from a model that saw its
    validation rows stops the solver at once near that model and leaks (measured: CV AUROC
    1.000 instead of 0.97).
    """
    with threadpool_limits(1):
        sw = None if sample_weight is None else sample_weight[rows]
        X, pipe = rows_matrix(parts, subset, rows), make_pipeline(cfg, seed)
        if pipe[-1].l1_ratio == 0.0:
            pipe, converged, n_iter, solver = fit_l2(pipe, X, y[rows], sw, certify=True)
        else:
            pipe, converged, n_iter = fit(pipe, X, y[rows], sw)
            solver = solver_check.record(n_iter, converged, pipe[-1].tol, cfg.max_iter)
        scores = decision(pipe, rows_matrix(parts, subset, score_rows))
    return pipe, converged, n_iter, scores, solver


def _tasks(plans, shared=None):
    """Every fit of every plan as a joblib task: the full mix first, then the folds."""
    for plan in plans:
        parts = shared.parts(plan.mix) if shared else plan.mix.parts
        everything = np.arange(len(plan.mix.y))
        for rows, score_rows in [(everything, everything)] + list(plan.folds):
            yield joblib.delayed(fit_task)(plan.cfg, plan.seed, parts, plan.mix.rows,
                                           plan.mix.y, rows, score_rows, plan.sample_weight)


# --------------------------------------------------------------------------------------------
# Every plan of a batch
# --------------------------------------------------------------------------------------------
def execute(plans, jobs=1, progress=None):
    """Fit every task of every plan; returns per plan [(pipe, converged, n_iter, scores,
    solver)], the full-mix fit first, then the folds; progress(plan) is called as each plan's
    fits finish.

    On this machine, L2 plans are fitted in lockstep in this process (lockstep.py; --jobs =
    threads for its products); L1 plans, and every plan when joblib's backend is remote
    (--dask-scheduler), go to joblib as one task per fit: local worker processes map the
    matrices from files written once per batch, remote tasks get the matrices themselves."""
    fitted = [None] * len(plans)
    backend = joblib.parallel.get_active_backend()[0].__class__.__name__
    local = backend in ("LokyBackend", "MultiprocessingBackend", "ThreadingBackend",
                        "SequentialBackend")
    if local:
        for i, results in enumerate(lockstep.run_plans(plans, lockstep.thread_count(jobs),
                                                       progress)):
            if results is not None:
                fitted[i] = [_from_lockstep(plans[i], r) for r in results]
    rest = [i for i, f in enumerate(fitted) if f is None]
    if rest:
        for i, f in zip(rest, _execute_tasks([plans[i] for i in rest], jobs, progress)):
            fitted[i] = f
    return fitted


def _from_lockstep(plan, r):
    """A lockstep result (lockstep.run_plans) as (pipe, converged, n_iter, scores, solver)."""
    pipe = set_l2_solution(make_pipeline(plan.cfg, plan.seed), r["coef"], r["intercept"],
                           r["n_iter"], plan.mix.n_features, scaler=r["scaler"])
    return pipe, r["converged"], r["n_iter"], r["scores"], r["solver"]


def _execute_tasks(plans, jobs=1, progress=None):
    """One joblib batch of per-fit tasks (see execute); results come back in task order, so a
    plan is done with its last task."""
    owners = [i for i, plan in enumerate(plans) for _ in range(len(plan.folds) + 1)]
    backend = joblib.parallel.get_active_backend()[0].__class__.__name__
    local_workers = (backend in ("LokyBackend", "MultiprocessingBackend")
                     and joblib.effective_n_jobs(jobs) > 1)
    shared = None
    fitted = [[] for _ in plans]
    if local_workers:
        unique = {id(A): A for plan in plans for A, _ in plan.mix.parts}
        shared = SharedMatrices(list(unique.values()))
    try:
        with short_lived_workers(), warnings.catch_warnings():
            # an interrupted batch closes the generator: joblib's warning that tasks were
            # cancelled would come after the run's own one-line message
            warnings.filterwarnings("ignore", message=r".*tasks (have been successfully "
                                    r"executed|which were still being processed)")
            # max_nbytes=None: tasks carry file names and row indices (SharedMatrices), so
            # joblib needs no memmapping folder of its own (one left by a killed run is warned
            # about by its resource tracker after the run has exited)
            out = joblib.Parallel(n_jobs=jobs, return_as="generator", max_nbytes=None)(
                _tasks(plans, shared))
            try:
                for i, res in zip(owners, out):
                    fitted[i].append(res)
                    if progress is not None and len(fitted[i]) == len(plans[i].folds) + 1:
                        progress(plans[i])
            except BaseException:
                with contextlib.suppress(Exception):   # the exception in flight is the one
                    out.close()                        # to report, not joblib's while aborting
                raise
    finally:
        if shared:
            shared.close()
    return fitted
