"""Shared machinery of the distribution sweep, in pipeline order: config -> load -> split -> mix.

    python run_all.py --demo                # every step, synthetic demo cache
    python 00_base_probe.py --cache-dir DIR # one step on a real cache

The dataset table and the step table below drive every script; the probe, its evaluation and the
result files live in `probe.py`, the statistics in `stats.py`, the shared analysis in `analysis.py`.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import stat
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from sweeplib import owned

ROOT = Path(__file__).resolve().parent

# --------------------------------------------------------------------------------------------
# Defaults: one block. CLI flags are generated from it (see build_parser).
# --------------------------------------------------------------------------------------------
DEFAULTS = {
    "cache_dir": ROOT / "cache",            # real cache root: <cache_dir>/layer_<L>/*.npy
    "layer": 40,                            # SAE layer (GemmaScope-2: 16, 31, 40, 53)
    "results_dir": ROOT / "results" / "distribution_sweep",
    "C": 10.0,                              # inverse L2/L1 strength of the logistic regression
    "penalty": "l2",                        # l2 (lbfgs) or l1 (saga)
    "max_iter": 1000,                       # solver iteration cap
    "tol": 1e-4,                            # solver tolerance (scikit-learn's default)
    "seed": 42,                             # every random choice derives from this
    "eval_fraction": 0.2,                   # held-out share of sycophant / model_organism / benchmark
    "cv_folds": 5,                          # CV folds on the training mix
    "repeats": 1,                           # independent seeds (split, folds, model)
    "near_dup_threshold": 0.99,             # cosine similarity counted as a near duplicate
    "jobs": -1,                             # threads of the fits' products (-1: all cores)
    "sidecar_dir": None,                    # sparse sidecars: None = next to the .npy files
    # the verdict (analysis only; see verdict.py)
    "gold_tolerance": 0.02,                 # largest gold_106 AUROC drop still called "holds"
    "min_base_auroc": 0.7,                  # step 0's gold_106 AUROC lower bound must reach this
}
# Accepted ranges of the numeric flags (checked before any data is read).
LIMITS = {
    "C": (1e-6, 1e6), "tol": (1e-15, 1.0), "max_iter": (1, 1_000_000), "seed": (0, 2 ** 32 - 1),
    "cv_folds": (2, 100), "repeats": (1, 1000), "jobs": (-1, 1024),
}
EXTRA_EVAL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")   # --extra-eval names
MAX_SIDECAR_BYTES = 64 * 1024 * 1024      # label files (.json / .npy) and --feature-ids files
DEMO_CACHE_DIR = ROOT / "cache" / "demo"
DEMO_RESULTS_DIR = ROOT / "results" / "demo"
DEMO_MARKER = "DEMO_CACHE.json"             # written by demo_data.py at the cache root
FPR_TARGETS = (1, 5)                        # recall is reported at these false-positive rates (%)

# Label strings -> AF (1) / not AF (0). Anything else is an error.
LABEL_MAP = {
    "alignment_faking": 1,
    "potential_faking": 1,
    "aligned": 0,
    "hard_negative": 0,
    "compliant_hard_negative": 0,
    "genuine_compliance": 0,
}
NPY_CLASS_NAMES = {0: "aligned", 1: "alignment_faking"}   # fine class of 0/1 .npy labels

# Metrics: the one table of their names in outputs.
METRIC_LABELS = {
    "auroc": "AUROC",
    "auroc_vs_reference_negatives": "AUROC vs ref. negatives",
    "detection_rate": "detection rate (AF scored >= 0.5)",
    "recall_at_fpr_5": "recall @ 5% train-FPR",
    "recall_at_fpr_1": "recall @ 1% train-FPR",
    "accuracy": "accuracy @ 0.5",
    "eval_fpr_5": "FPR on own negatives @ 5% threshold",
}


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the cache and its role in the experiment."""
    name: str            # name in results
    stem: str            # file stem in the layer folder
    role: str            # "train": train only; "eval": evaluated whole; "split": 80/20 train/held-out
    regime: str          # activation format: "scratchpad" (training format) or "ood"
    reference: str | None = None   # eval negatives used for single-class sets (same regime)
    title: str = ""


DATASETS = {d.name: d for d in (
    DatasetSpec("train", "train", "train", "scratchpad", title="alignment-faking-training"),
    DatasetSpec("gold_106", "test", "eval", "scratchpad", title="gold_106 (hand-labelled)"),
    DatasetSpec("sycophant", "sycophant", "split", "ood", "benchmark", "sycophant"),
    DatasetSpec("model_organism", "model_organism", "split", "ood", "benchmark",
                "model_organism (model organisms)"),
    DatasetSpec("benchmark", "benchmark", "split", "ood", None, "benchmark"),
)}
EVAL_SETS = tuple(n for n, d in DATASETS.items() if d.role in ("eval", "split"))


def eval_set_names():
    """Every eval set known now: the table's plus any registered with --extra-eval."""
    return tuple(n for n, d in DATASETS.items() if d.role in ("eval", "split"))


@contextlib.contextmanager
def extra_evals(names):
    """Register --extra-eval sets for the duration of one run, then forget them."""
    added = [n for n in (names or []) if n not in DATASETS]
    try:
        for name in names or []:
            register_extra_eval(name)
        yield
    finally:
        for name in added:
            DATASETS.pop(name, None)


def register_extra_eval(name):
    """Add <name>_activations.npy / <name>_labels.* as an eval-only dataset."""
    if name in DATASETS:
        if DATASETS[name].role == "eval" and DATASETS[name].regime == "extra":
            return
        raise InputError(f"--extra-eval: {name!r} is already a dataset of the experiment")
    check_extra_eval_name(name)
    DATASETS[name] = DatasetSpec(name, name, "eval", "extra", None, f"{name} (extra eval set)")


def check_extra_eval_name(name):
    """InputError unless name can be an eval set's name: a letter, then letters, digits, '_'
    or '-' (at most 64), and not a dataset's name or file stem."""
    if not EXTRA_EVAL_NAME.match(name):
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise InputError(f"--extra-eval: {shown!r} is not a valid name (a letter, then up to 63 "
                         "letters, digits, '_' or '-')")
    stems = {d.stem: n for n, d in DATASETS.items() if d.regime != "extra"}
    if name in stems:
        raise InputError(f"--extra-eval: {name!r} is the file stem of dataset {stems[name]}")


@dataclass(frozen=True)
class StepSpec:
    """One step of the sweep: what it trains on and the question it asks."""
    number: int
    slug: str
    training: tuple      # dataset names whose training rows form the mix
    question: str


STEPS = (
    StepSpec(0, "base", ("train",),
             "Does a probe trained on one distribution generalize out of distribution at all?"),
    StepSpec(1, "add_sycophant", ("train", "sycophant"),
             "Does one extra (all-AF, OOD-format) source move OOD performance?"),
    StepSpec(2, "add_organisms", ("train", "sycophant", "model_organism"),
             "Do model-organism samples carry signal that transfers to the benchmark?"),
    StepSpec(3, "add_benchmark", ("train", "sycophant", "model_organism", "benchmark"),
             "With OOD negatives in the mix, does the benchmark recover and gold_106 hold?"),
)
STEP_BY_NUMBER = {s.number: s for s in STEPS}
EXTRA_STEPS = (     # controls that appear in the comparison but are not part of the sweep's chain
    StepSpec(4, "ood_only", ("sycophant", "model_organism", "benchmark"),
             "Without alignment-faking-training, how far do the OOD sources alone get?"),
)
ALL_STEPS = {s.number: s for s in STEPS + EXTRA_STEPS}


def step_spec(number):
    """The StepSpec of a step number (0-3: the sweep; 4: OOD-only control)."""
    return ALL_STEPS[number]


TIMINGS = {}                                # phase -> wall seconds, summed over the process


class timed:
    """Context manager adding the wall time of a block to TIMINGS[phase]."""

    def __init__(self, phase):
        self.phase = phase

    def __enter__(self):
        import time
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        import time
        TIMINGS[self.phase] = TIMINGS.get(self.phase, 0.0) + time.perf_counter() - self.t0


class InputError(Exception):
    """Bad input: the message's first line names the file (or flag) and the problem."""


class WriteError(Exception):
    """An output could not be written (disk full, I/O error): the message names the file."""


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def _number(text, kind):
    """text as int or float, or an argparse error saying what was expected."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def bounded_float(key):
    """argparse type: a finite float > 0 within LIMITS[key] (-C, --tol)."""
    lo, hi = LIMITS[key]

    def parse(text):
        value = _number(text, float)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in [{lo:g}, {hi:g}], got {text}")
        return value
    parse.__name__ = key
    return parse


def _fraction(text):
    """argparse type: a float in (0, 1)."""
    value = _number(text, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def _positive_int(text):
    """argparse type: an int >= 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


REMOVED_FLAGS = {"--n-boot": "intervals are no longer bootstrapped (closed-form intervals, see "
                             "the README's Metrics section); drop the flag"}


class _RemovedFlag(argparse.Action):
    """A flag that no longer exists: a clear error instead of 'unrecognized arguments'."""

    def __call__(self, parser, namespace, values, option_string=None):
        """Refuse the flag, saying why."""
        parser.error(f"argument {option_string}: removed; {REMOVED_FLAGS[option_string]}")


def _bounded_int(key):
    """argparse type: an int within LIMITS[key] (jobs: also never 0)."""
    lo, hi = LIMITS[key]

    def parse(text):
        value = _number(text, int)
        if key == "jobs" and value == 0:
            raise argparse.ArgumentTypeError("must be -1 (all cores) or >= 1, got 0")
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {text}")
        if value > hi:
            raise argparse.ArgumentTypeError(f"must be <= {hi}, got {text}")
        return value
    parse.__name__ = key
    return parse


def _path(text):
    """argparse type: a non-empty path."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return Path(text)


def output_path(text):
    """argparse type of --output: a file path in an existing folder, not a folder itself."""
    path = _path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path.parent} does not exist")
    return path


def _extra_name(text):
    """argparse type: an --extra-eval name (see check_extra_eval_name)."""
    try:
        check_extra_eval_name(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[1]) from None
    return text


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors put the problem on the first line (then a usage hint)."""

    def error(self, message):
        """Print 'error: <flag>: <problem>' first, the usage after; exit 2."""
        sys.stderr.write(f"error: {message}\n")
        self.print_usage(sys.stderr)
        raise SystemExit(2)


def results_parser(doc, verdict_flags=True):
    """Parser of the scripts that read a results folder: --results-dir, --allow-mixed."""
    p = Parser(description=doc.split("\n\n")[0].replace("\n", " "),
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--results-dir", type=_path, default=DEFAULTS["results_dir"],
                   help="folder with the step results")
    p.add_argument("--allow-mixed", action="store_true",
                   help="combine steps whose config or inputs differ")
    if verdict_flags:
        add_verdict_flags(p)
    return p


def add_verdict_flags(p):
    """Flags of the verdict's criteria (scripts that analyze a results folder)."""
    p.add_argument("--gold-tolerance", type=_fraction, default=DEFAULTS["gold_tolerance"],
                   help="largest drop of gold_106 AUROC (first to last step) that still counts "
                        "as 'in-distribution holds'; shown only when the interval supports it")
    p.add_argument("--min-base-auroc", type=_fraction, default=DEFAULTS["min_base_auroc"],
                   help="the base probe's gold_106 AUROC interval must lie above this for a "
                        "verdict (else: inconclusive)")


def build_parser(description):
    """The flags shared by every step script and run_all.py, defaults from DEFAULTS."""
    p = Parser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = DEFAULTS
    p.add_argument("--cache-dir", type=_path, default=d["cache_dir"],
                   help="cache root holding layer_<L>/ folders")
    p.add_argument("--layer", type=int, default=d["layer"], help="SAE layer to load")
    p.add_argument("--results-dir", type=_path, default=None,
                   help=f"where results go (default {d['results_dir'].relative_to(ROOT)}, "
                        f"or {DEMO_RESULTS_DIR.relative_to(ROOT)} with --demo)")
    p.add_argument("--demo", action="store_true",
                   help=f"use the synthetic demo cache ({DEMO_CACHE_DIR.relative_to(ROOT)}, "
                        "generated when absent) and demo results folder")
    p.add_argument("-C", dest="C", type=bounded_float("C"), nargs="+", default=[d["C"]],
                   help="inverse regularization strength (several values: a grid, run_all.py)")
    p.add_argument("--penalty", choices=("l1", "l2"), nargs="+", default=[d["penalty"]],
                   help="regularization, l2 (lbfgs) or l1 (saga); several: a grid")
    p.add_argument("--layers", type=int, nargs="+", default=None,
                   help="grid over these layers (run_all.py; each cell in its own folder)")
    p.add_argument("--max-iter", type=_bounded_int("max_iter"), default=d["max_iter"],
                   help="solver iteration cap")
    p.add_argument("--tol", type=bounded_float("tol"), default=d["tol"],
                   help="solver tolerance: stop when every gradient entry is <= TOL "
                        "(scikit-learn's default, as the original research; 1e-8 fits to the "
                        "optimum, see --solver-check)")
    p.add_argument("--seed", type=_bounded_int("seed"), default=d["seed"],
                   help="seed of every random choice")
    p.add_argument("--eval-fraction", type=_fraction, default=d["eval_fraction"],
                   help="held-out share of each split dataset")
    p.add_argument("--cv-folds", type=_bounded_int("cv_folds"), default=d["cv_folds"],
                   help="cross-validation folds on the training mix (>= 2)")
    p.add_argument("--feature-ids", type=_path, default=None,
                   help="JSON list of SAE feature ids every step uses (default: all)")
    p.add_argument("--n-boot", nargs="?", action=_RemovedFlag,
                   help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=_bounded_int("repeats"), default=d["repeats"],
                   help="independent seeds (split, folds, model); seed, seed+1, ...")
    p.add_argument("--dedup-split", action="store_true",
                   help="keep exact-duplicate rows on one side of the 80/20 split")
    p.add_argument("--near-dup-threshold", type=_fraction, default=d["near_dup_threshold"],
                   help="cosine similarity counted as a near duplicate in the leakage audit")
    p.add_argument("--class-weight", choices=("balanced",), default=None,
                   help="weight AF and not-AF equally in the loss")
    p.add_argument("--source-weight", choices=("proportional", "equal"), default="proportional",
                   help="each source's share of the loss: by its size, or equal")
    p.add_argument("--extra-eval", type=_extra_name, nargs="+", default=None, metavar="NAME",
                   help="also evaluate <NAME>_activations.npy + <NAME>_labels.json|.npy whole, "
                        "at every step (never trained on)")
    p.add_argument("--sidecar-dir", type=Path, default=d["sidecar_dir"], metavar="DIR",
                   help="where the sparse sidecar copies of the activations go (default: next "
                        "to each .npy; use this when the cache folder is read-only)")
    p.add_argument("--no-sidecar", action="store_true",
                   help="neither read nor write sparse sidecars (convert the dense files)")
    p.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                   help="run the fits on an existing dask.distributed cluster (needs dask)")
    p.add_argument("--jobs", type=_bounded_int("jobs"), default=d["jobs"],
                   help="threads for the lockstep fits' products (L2); worker processes for "
                        "L1 fits and dask tasks; -1: all cores")
    p.add_argument("--quiet", action="store_true", help="print only warnings and errors")
    return p


def check_single_values(args):
    """A single step or sweep takes one layer, one C and one penalty (grids: run_all.py)."""
    if len(args.C) > 1 or len(args.penalty) > 1 or (args.layers and len(args.layers) > 1):
        raise InputError("-C/--penalty/--layers: several values make a grid; run it with "
                         "run_all.py")
    if args.layers:
        args.layer = args.layers[0]
        args.layers = None


def resolve_paths(args):
    """Apply --demo and the default results folder; return (cache_dir, results_dir)."""
    if args.demo:
        cache_dir = args.cache_dir if args.cache_dir != DEFAULTS["cache_dir"] else DEMO_CACHE_DIR
        results_dir = args.results_dir or DEMO_RESULTS_DIR
    else:
        cache_dir = args.cache_dir
        results_dir = args.results_dir or DEFAULTS["results_dir"]
    if args.cv_folds < 2:
        raise InputError(f"--cv-folds: must be >= 2, got {args.cv_folds}")
    if args.seed + args.repeats - 1 > LIMITS["seed"][1]:
        raise InputError(f"--seed: {args.seed} with --repeats {args.repeats} runs past the "
                         f"largest seed {LIMITS['seed'][1]}")
    extra = getattr(args, "extra_eval", None) or []
    if len(set(extra)) != len(extra):
        raise InputError("--extra-eval: " + next(n for n in extra if extra.count(n) > 1)
                         + " is given twice")
    if getattr(args, "dask_scheduler", None) is not None and not args.dask_scheduler.strip():
        raise InputError("--dask-scheduler: empty address")
    return Path(cache_dir), Path(results_dir)


def ensure_demo_cache(cache_dir, layer, quiet=False):
    """Generate the demo cache at cache_dir unless a complete one is there."""
    if (cache_dir / DEMO_MARKER).exists() and (cache_dir / f"layer_{layer}").is_dir():
        return
    import demo_data
    if not quiet:
        print(f"generating synthetic demo cache in {cache_dir} ...", flush=True)
    demo_data.generate(cache_dir, layers=(layer,), verbose=not quiet)


def data_source(cache_dir):
    """'demo' when the cache carries the demo marker, else 'cache'."""
    return "demo" if (Path(cache_dir) / DEMO_MARKER).exists() else "cache"


def demo_info(cache_dir):
    """The demo generator's settings (seed, scale, width, null mode) from the marker, or None."""
    path = Path(cache_dir) / DEMO_MARKER
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise InputError(f"{path}: unreadable demo marker ({e})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: demo marker must be a JSON object")
    return {k: doc.get(k) for k in ("seed", "scale", "n_features", "null")}


# --------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """Activations (CSR float32), binary labels, fine classes and the files they came from."""
    name: str
    X: sp.csr_matrix
    y: np.ndarray
    classes: np.ndarray
    files: dict = field(default_factory=dict)       # role -> path
    n_negative_values: int = 0
    warnings: list = field(default_factory=list)    # data warnings (datacheck.py)


LOAD_CHUNK_ROWS = 256


def layer_dir(cache_dir, layer):
    """The folder holding one layer's files."""
    return Path(cache_dir) / f"layer_{layer}"


def dataset_files(cache_dir, layer, name):
    """(activations path, labels path or None) of a dataset; labels may be .npy or .json."""
    d = layer_dir(cache_dir, layer)
    stem = DATASETS[name].stem
    acts = d / f"{stem}_activations.npy"
    preferred = ("npy", "json") if DATASETS[name].role != "split" else ("json", "npy")
    for ext in preferred:
        lab = d / f"{stem}_labels.{ext}"
        if lab.exists():
            return acts, lab
    return acts, None


def missing_files(cache_dir, layer, names):
    """Paths (as strings) that the given datasets need but the cache lacks."""
    out = []
    for name in names:
        acts, lab = dataset_files(cache_dir, layer, name)
        if not acts.exists():
            out.append(str(acts))
        if lab is None:
            out.append(str(layer_dir(cache_dir, layer) / f"{DATASETS[name].stem}_labels.json|.npy"))
    return out


def layout_help(cache_dir, layer):
    """Multi-line description of the expected cache layout (printed after a missing-file error)."""
    lines = [f"expected layout under {layer_dir(cache_dir, layer)}/:"]
    for name, d in DATASETS.items():
        lab = "json" if d.role == "split" else ("json|.npy" if d.regime == "extra" else "npy")
        lines.append(f"  {d.stem}_activations.npy  {d.stem}_labels.{lab}   ({name})")
    lines.append("no real cache? run: python run_all.py --demo")
    return "\n".join(lines)


FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
              (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
              (stat.S_ISSOCK, "a socket"))


def open_regular(path, what="file"):
    """Open a regular file for reading; InputError for a missing file, a directory, FIFO or
    device (opened non-blocking, so a FIFO never hangs the run)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except OSError as e:
        raise InputError(f"{path}: cannot open {what} ({e.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((name for test, name in FILE_KINDS if test(mode)), "not a regular file")
        raise InputError(f"{path}: {what} is {kind}, not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_small_file(path, what, limit=MAX_SIDECAR_BYTES):
    """Bytes of a regular file of at most `limit` bytes (InputError otherwise)."""
    with open_regular(path, what) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"{path}: {what} is over the {limit} byte limit")
    return data


def parse_json(data, path, what):
    """A JSON document from bytes; InputError for bad UTF-8, syntax, nesting or numbers."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: malformed {what} (not UTF-8: {e.reason})") from None
    except RecursionError:
        raise InputError(f"{path}: malformed {what} (nested too deeply)") from None
    except ValueError as e:
        raise InputError(f"{path}: malformed {what} ({str(e)[:200]})") from None


def _npy_header(path):
    """(shape, fortran_order, dtype, data offset) of a .npy, validated; never unpickles."""
    fmt = np.lib.format
    f = open_regular(path, ".npy file")
    try:
        with f:
            version = fmt.read_magic(f)
            read_header = (fmt.read_array_header_1_0 if version == (1, 0)
                           else fmt.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except (ValueError, EOFError, OSError) as e:
        raise InputError(f"{path}: not a readable .npy file (empty, truncated or corrupt: "
                         f"{e or type(e).__name__})") from None
    if dtype.hasobject:
        raise InputError(f"{path}: holds an object array; refusing to unpickle it")
    need = offset + math.prod(shape) * dtype.itemsize
    size = Path(path).stat().st_size
    if size < need:
        raise InputError(f"{path}: truncated .npy file ({size} bytes, header promises {need})")
    return shape, fortran, dtype, offset


def _open_npy(path):
    """Memory-map a .npy after checking its header; never unpickles. InputError if unreadable."""
    _npy_header(path)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise InputError(f"{path}: not a readable .npy file ({e})") from None


def activation_shape(path):
    """(rows, features) of an activations file, validated as 2-D numeric (header only)."""
    shape, _, dtype, _ = _npy_header(path)
    if len(shape) != 2:
        raise InputError(f"{path}: activations must be 2-D (samples x features), got shape "
                         f"{shape}")
    if dtype.kind not in "fiub":
        raise InputError(f"{path}: activations must be numeric, got dtype {dtype}")
    if shape[1] == 0:
        raise InputError(f"{path}: activations have no features (shape {shape})")
    return shape


def _dense_to_csr_parts(block):
    """(data, column indices, per-row counts) of a dense float32 block's non-zeros."""
    flat = block.ravel()
    lin = np.flatnonzero(flat)
    return flat[lin], (lin % block.shape[1]).astype(np.int32), np.count_nonzero(block, axis=1)


def _row_chunks(path, rows=LOAD_CHUNK_ROWS):
    """(first row, dense block) of a 2-D .npy, read with plain reads: no memory map, so the
    file's pages never count against the process's memory (Fortran order: via a map)."""
    shape, fortran, dtype, offset = _npy_header(path)
    if fortran:
        arr = _open_npy(path)
        for start in range(0, shape[0], rows):
            yield start, np.asarray(arr[start:start + rows])
        return
    row_bytes = shape[1] * dtype.itemsize
    with open(path, "rb") as f:
        f.seek(offset)
        for start in range(0, shape[0], rows):
            k = min(rows, shape[0] - start)
            buf = f.read(k * row_bytes)
            if len(buf) != k * row_bytes:
                raise InputError(f"{path}: truncated .npy file (ends inside row {start})")
            yield start, np.frombuffer(buf, dtype=dtype).reshape(k, shape[1])


def load_activations(path, feature_ids=None, sidecar=None):
    """CSR float32 activations (optionally a column subset) and the negative-value count;
    with a sidecar store (sidecar.Store) the whole matrix comes from its verified sparse
    sidecar, or is converted and stored there."""
    n_rows, n_features = activation_shape(path)
    if n_rows == 0:
        raise InputError(f"{path}: activations file has no rows")
    if sidecar is None:
        return _dense_to_csr(path, n_rows, n_features, feature_ids)
    source = fingerprint(path)
    cached = sidecar.load(path, (n_rows, n_features), source)
    if cached is None:
        cached = _dense_to_csr(path, n_rows, n_features, None)
        sidecar.save(path, *cached, source)
    X, n_neg = cached
    if feature_ids is None:
        return X, n_neg
    X = X[:, np.asarray(feature_ids, dtype=np.intp)].tocsr()
    X.sort_indices()
    return X, int(np.count_nonzero(X.data < 0))


def _dense_to_csr(path, n_rows, n_features, feature_ids):
    """Read a dense activations file chunk-wise into CSR float32 (optionally a column subset)."""
    cols = None if feature_ids is None else np.asarray(feature_ids, dtype=np.intp)
    data, indices, counts, n_neg = [], [], [], 0
    for start, block in _row_chunks(path):
        if cols is not None:
            block = block[:, cols]
        raw = block
        with np.errstate(over="ignore"):
            block = np.ascontiguousarray(block, dtype=np.float32)
        if not np.isfinite(block.sum(dtype=np.float64)) and not np.isfinite(block).all():
            r, c = np.argwhere(~np.isfinite(block))[0]
            what = (f"value {raw[r, c]:.3g} outside the float32 range" if np.isfinite(raw[r, c])
                    else f"non-finite value {block[r, c]}")
            raise InputError(f"{path}: {what} at row {start + r}, "
                             f"feature {c if cols is None else cols[c]}")
        n_neg += int(np.count_nonzero(block < 0))
        d, i, k = _dense_to_csr_parts(block)
        data.append(d)
        indices.append(i)
        counts.append(k)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts), out=indptr[1:])
    if indptr[-1] < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    n_cols = n_features if cols is None else len(cols)
    X = sp.csr_matrix((np.concatenate(data), np.concatenate(indices), indptr),
                      shape=(n_rows, n_cols))
    return X, n_neg


def load_labels(path, name):
    """(binary labels int8, fine classes) from a .npy (0/1 or bool) or a .json sidecar."""
    path = Path(path)
    if path.suffix == ".npy":
        _npy_header(path)                       # a regular, readable .npy first
        size = path.stat().st_size
        if size > MAX_SIDECAR_BYTES:
            raise InputError(f"{path}: labels file is {size} bytes, over the "
                             f"{MAX_SIDECAR_BYTES} byte limit")
        raw = np.asarray(_open_npy(path))
        if raw.ndim != 1:
            raise InputError(f"{path}: labels must be 1-D, got shape {raw.shape}")
        if raw.dtype.kind not in "iub":
            raise InputError(f"{path}: .npy labels must be 0/1 integers or bools, got dtype "
                             f"{raw.dtype}")
        values = set(np.unique(raw).tolist())
        if not values <= {0, 1}:
            raise InputError(f"{path}: .npy labels must be 0/1, found {sorted(values)[:5]}")
        y = raw.astype(np.int8)
        classes = np.where(y == 1, NPY_CLASS_NAMES[1], NPY_CLASS_NAMES[0])
        return y, classes
    doc = parse_json(read_small_file(path, "labels JSON"), path,
                     "labels JSON")
    if not isinstance(doc, dict) or not isinstance(doc.get("labels"), list):
        raise InputError(f"{path}: labels JSON must be an object with a 'labels' list")
    labels = doc["labels"]
    y = np.empty(len(labels), dtype=np.int8)
    classes = []
    for i, lab in enumerate(labels):
        if isinstance(lab, bool) or (isinstance(lab, int) and lab in (0, 1)):
            y[i] = int(lab)
            classes.append(NPY_CLASS_NAMES[int(lab)])
        elif isinstance(lab, str) and lab in LABEL_MAP:
            y[i] = LABEL_MAP[lab]
            classes.append(lab)
        else:
            raise InputError(f"{path}: unknown label {lab!r} at index {i} in dataset {name} "
                             f"(known: {', '.join(LABEL_MAP)})")
    return y, np.asarray(classes, dtype=str)


def read_feature_ids(path, n_features):
    """Validated list of feature ids from a JSON file."""
    path = Path(path)
    ids = parse_json(read_small_file(path, "feature-ids file"), path, "feature-ids JSON")
    if isinstance(ids, dict) and "feature_ids" in ids:
        ids = ids["feature_ids"]
    if not isinstance(ids, list) or not ids:
        raise InputError(f"{path}: feature ids must be a non-empty JSON list of integers")
    bad = [v for v in ids if isinstance(v, bool) or not isinstance(v, int)]
    if bad:
        raise InputError(f"{path}: feature ids must be integers, found {bad[0]!r}")
    out = [v for v in ids if not 0 <= v < n_features]
    if out:
        raise InputError(f"{path}: feature id {out[0]} out of range [0, {n_features})")
    if len(set(ids)) != len(ids):
        dup = next(v for v in ids if ids.count(v) > 1)
        raise InputError(f"{path}: feature id {dup} appears more than once")
    return ids


def check_present(cache_dir, layer, names):
    """InputError naming the first missing folder or file the given datasets need."""
    d = layer_dir(cache_dir, layer)
    if not Path(cache_dir).is_dir():
        raise InputError(f"{cache_dir}: cache directory not found\n{layout_help(cache_dir, layer)}")
    if not d.is_dir():
        present = sorted(p.name for p in Path(cache_dir).glob("layer_*"))
        raise InputError(f"{d}: layer folder not found (present: {', '.join(present) or 'none'})"
                         f"\n{layout_help(cache_dir, layer)}")
    missing = missing_files(cache_dir, layer, names)
    if missing:
        raise InputError(f"{missing[0]}: missing from the cache"
                         + (f" (and {len(missing) - 1} more: {', '.join(missing[1:])})"
                            if len(missing) > 1 else "")
                         + f"\n{layout_help(cache_dir, layer)}")


def load_cache(cache_dir, layer, names, feature_ids_path=None, warn=print, sidecar=None):
    """Load the named datasets once; validate shapes, labels and feature counts across files
    (sidecar: a sidecar.Store of sparse copies, or None).

    Returns (datasets: dict name -> Dataset, feature_ids list or None, n_features_in_cache).
    """
    check_present(cache_dir, layer, names)
    shapes = {name: activation_shape(dataset_files(cache_dir, layer, name)[0]) for name in names}
    n_features = None
    for name, shape in shapes.items():
        if n_features is None:
            n_features, first = shape[1], name
        elif shape[1] != n_features:
            path = dataset_files(cache_dir, layer, name)[0]
            raise InputError(f"{path}: {shape[1]} features, but {first} has {n_features}")
    feature_ids = read_feature_ids(feature_ids_path, n_features) if feature_ids_path else None
    out = {}
    for name in names:
        acts, lab = dataset_files(cache_dir, layer, name)
        y, classes = load_labels(lab, name)
        if len(y) != shapes[name][0]:
            raise InputError(f"{lab}: {len(y)} labels for {shapes[name][0]} rows in {acts.name}")
        X, n_neg = load_activations(acts, feature_ids, sidecar)
        if n_neg:
            warn(f"note: {acts}: {n_neg} negative values (SAE activations are >= 0; "
                 "is this the right file?)")
        out[name] = Dataset(name, X, y, classes, {"activations": acts, "labels": lab}, n_neg)
    return out, feature_ids, n_features


def fingerprint(path):
    """File identity: size and the sha256 of the whole file (about 1.2 GB/s here: 0.35 s for
    the full-size demo cache's 400 MB)."""
    path = Path(path)
    h = hashlib.sha256()
    with open_regular(path, "input file") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
        size = f.tell()
    return {"bytes": size, "sha256": h.hexdigest()}


def input_fingerprints(datasets, feature_ids_path=None):
    """Fingerprint of every input file the run read."""
    out = {}
    for ds in datasets.values():
        for path in ds.files.values():
            out[str(path)] = fingerprint(path)
    if feature_ids_path:
        out[str(feature_ids_path)] = fingerprint(feature_ids_path)
    return out


# --------------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------------
def split_seed(seed, name):
    """Seed of one dataset's split: depends on the run seed and the dataset name only."""
    return [int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())]


def stratified_split(classes, eval_fraction, seed, name):
    """(train_idx, eval_idx): per fine class, a seeded eval_fraction share goes to eval."""
    rng = np.random.default_rng(split_seed(seed, name))
    train, held = [], []
    for cls in np.unique(classes):
        idx = np.flatnonzero(classes == cls)
        idx = idx[rng.permutation(len(idx))]
        k = int(round(len(idx) * eval_fraction))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        held.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


@dataclass
class Split:
    """Row indices of one dataset used for training and for evaluation."""
    train: np.ndarray
    eval: np.ndarray


def make_splits(datasets, eval_fraction, seed, dedup=False):
    """Split of every loaded dataset, by its role; deterministic from seed and name."""
    splits = {}
    for name, ds in datasets.items():
        n = len(ds.y)
        role = DATASETS[name].role
        if role == "train":
            splits[name] = Split(np.arange(n), np.arange(0))
        elif role == "eval":
            splits[name] = Split(np.arange(0), np.arange(n))
        elif dedup:
            from sweeplib import stats
            groups = stats.duplicate_groups(ds.X)
            rng_seed = split_seed(seed, name)
            tr, ev = stats.grouped_stratified_split(ds.classes, groups, eval_fraction,
                                                    seed=rng_seed[0] ^ rng_seed[1])
            splits[name] = Split(np.sort(tr), np.sort(ev))
        else:
            tr, ev = stratified_split(ds.classes, eval_fraction, seed, name)
            splits[name] = Split(tr, ev)
        if role != "train" and len(splits[name].eval) < 2:
            raise InputError(f"{ds.files['activations']}: eval set {name} has "
                             f"{len(splits[name].eval)} sample(s) after the split; need >= 2")
    return splits


# --------------------------------------------------------------------------------------------
# Training mix
# --------------------------------------------------------------------------------------------
@dataclass
class Mix:
    """A step's training rows: labels and origins, with the matrix built only on demand
    (a sweep plans every step up front; holding every mix's matrix at once would cost memory)."""
    parts: list                 # [(CSR matrix of a dataset, row indices)], source by source
    y: np.ndarray
    source: np.ndarray
    classes: np.ndarray
    rows: np.ndarray | None = None    # a subset of the concatenated rows (fixed budget)

    @property
    def X(self):
        """The training matrix (CSR float32), built now."""
        X = sp.vstack([A[idx] for A, idx in self.parts], format="csr")
        return X if self.rows is None else X[self.rows]

    @property
    def n_features(self):
        """Number of feature columns."""
        return self.parts[0][0].shape[1]

    def subset(self, rows):
        """The mix restricted to some rows."""
        keep = rows if self.rows is None else self.rows[rows]
        return Mix(self.parts, self.y[rows], self.source[rows], self.classes[rows], keep)

    def breakdown(self):
        """Per source: n, AF count and fine-class counts."""
        out = {}
        for src in dict.fromkeys(self.source.tolist()):
            m = self.source == src
            cls, cnt = np.unique(self.classes[m], return_counts=True)
            out[src] = {"n": int(m.sum()), "af": int(self.y[m].sum()),
                        "classes": {str(c): int(k) for c, k in zip(cls, cnt)}}
        return out


def training_rows(step, splits):
    """(dataset name, row indices) pairs that form a step's training mix."""
    return [(name, splits[name].train) for name in step.training]


def build_mix(step, datasets, splits):
    """Concatenate the training rows of the step's sources, source by source."""
    parts = training_rows(step, splits)
    y = np.concatenate([datasets[n].y[idx] for n, idx in parts])
    source = np.concatenate([np.full(len(idx), n) for n, idx in parts]).astype(str)
    classes = np.concatenate([datasets[n].classes[idx] for n, idx in parts])
    if len(np.unique(y)) < 2:
        raise InputError(f"{datasets[parts[0][0]].files['labels']}: training mix of step "
                         f"{step.number} has one class only ({int(y[0])}); cannot train a probe")
    return Mix([(datasets[n].X, idx) for n, idx in parts], y, source, classes)


def eval_sets(datasets, splits):
    """(name, Dataset, row indices) of every eval set present."""
    return [(n, datasets[n], splits[n].eval) for n in eval_set_names() if n in datasets]


def die(message):
    """Print an error (first line names the file and the problem) and return exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


TMP_PREFIX = ".sweep-tmp-"     # owned temp folders of atomic_write (see owned.py)


def atomic_write(path, data):
    """Write bytes to path: into a temp folder this tool owns next to it, fsync, os.replace.
    WriteError (naming path) when the disk is full or the folder not writable."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; cannot write a file there")
    tmp_dir = None
    try:
        owned.remove_stale(path.parent, TMP_PREFIX)
        tmp_dir = owned.make_dir(path.parent, TMP_PREFIX, "temp")
        owned.write_file(tmp_dir / path.name, data)
        os.replace(tmp_dir / path.name, path)
    except OSError as e:
        raise WriteError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)


RUN_ONLY_KEYS = ("jobs", "quiet", "dask_scheduler", "sidecar")   # never change a number


def comparable(config):
    """Config without the keys that cannot change a result."""
    return {k: v for k, v in config.items() if k not in RUN_ONLY_KEYS}


def main_step(number, argv=None):
    """Entry point of a numbered step script: run that step alone (see sweep.py)."""
    from sweeplib import sweep
    return sweep.main_step(number, argv)
