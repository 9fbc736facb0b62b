"""The command line and the run's configuration: flag types, the parsers every script shares,
path resolution, the typed RunConfig built once from the flags, and the config keys that never
change a result.

    p = config.build_parser(description)      # flags of the step scripts and run_all.py
    p = config.results_parser(__doc__)         # flags of the scripts that read a results folder

Flags are generated from the defaults in common.DEFAULTS and checked against common.LIMITS
before any data is read; a bad value is one line naming the flag (exit 2).
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import fnmatch
import os
import re
import stat
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from common import (DATASETS, DEFAULTS, DEMO_CACHE_DIR, DEMO_RESULTS_DIR, EXTRA_EVAL_NAME,
                    LIMITS, ROOT)
from sweeplib.base import InputError, file_kind, shown_path
from sweeplib.hints import FLAG_OWNERS, command


# --------------------------------------------------------------------------------------------
# Flag types
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
        """The flag's value, or an argparse error saying what is wrong."""
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


REMOVED_FLAGS = {"--n-boot": "intervals are no longer bootstrapped (closed-form intervals, see "
                             "docs/REFERENCE.md, Metrics and intervals); drop the flag"}


class _RemovedFlag(argparse.Action):
    """A flag that no longer exists: a clear error instead of 'unrecognized arguments'."""

    def __call__(self, parser, namespace, values, option_string=None):
        """Refuse the flag, saying why."""
        parser.error(f"argument {option_string}: removed; {REMOVED_FLAGS[option_string]}")


def _bounded_int(key):
    """argparse type: an int within LIMITS[key] (jobs: also never 0)."""
    lo, hi = LIMITS[key]

    def parse(text):
        """The flag's value, or an argparse error saying what is wrong."""
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


path_flag = _path        # public name: the type of the scripts' own path flags


# Names --output never takes: the tool's own result, input and bookkeeping files (writing a
# report over one would destroy it, or make a folder unreadable). report.* and dashboard.html
# are the outputs --output is for.
OWN_FILE_PATTERNS = ("step_*.json", "step_*_scores.npz", "step_*_probe.pkl", "verdict.json",
                     "transfer_matrix.json", "grid_summary.json", "sweep.png",
                     "score_distributions.png", "transfer_matrix.png", "*_activations.npy",
                     "*_activations.npz", "*_activations.csr.npz", "*_labels.npy", "*_labels.json", "DEMO_CACHE.json",
                     "DEMO_CACHE.partial.json", "JOURNAL.json", "OWNER.json", ".sweep.lock")


def _own_file_pattern(path):
    """The OWN_FILE_PATTERNS entry a path's name (or, for a symlink, its target's) matches."""
    names = [path.name]
    with contextlib.suppress(OSError, RuntimeError):
        names.append(path.resolve().name)
    return next((pat for name in names for pat in OWN_FILE_PATTERNS
                 if fnmatch.fnmatchcase(name, pat)), None)


def output_path(text):
    """argparse type of --output: a file path in an existing folder; never a folder, FIFO,
    device or socket, nor a name of the tool's own files (OWN_FILE_PATTERNS)."""
    path = _path(text)
    shown = shown_path(text)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{shown}: cannot use it ({e.strerror})") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise argparse.ArgumentTypeError(f"{shown} is a directory; give a file name")
    if mode is not None and not stat.S_ISREG(mode):
        kind = file_kind(mode)
        raise argparse.ArgumentTypeError(f"{shown} is {kind}, not a regular file; refusing to "
                                         "replace it")
    pattern = _own_file_pattern(path)
    if pattern:
        raise argparse.ArgumentTypeError(f"{shown}: a name of this tool's own files "
                                         f"({pattern}); refusing to write a report over it")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path.parent} does not exist")
    return path


def report_output(text, results_dir):
    """The path --output names: a bare file name lands in the results folder (report.md ->
    <results-dir>/report.md), a path (./report.md, out/report.md, /tmp/report.md) is taken
    as given; then checked as output_path does (argparse.ArgumentTypeError)."""
    text = str(text)
    if text.strip() and "/" not in text and text not in (".", ".."):
        text = str(Path(results_dir) / text)
    return output_path(text)


def parse_output(parser, args):
    """args.output resolved by report_output, or the parser's one-line error (exit 2)."""
    if args.output is not None:
        try:
            args.output = report_output(args.output, args.results_dir)
        except argparse.ArgumentTypeError as e:
            parser.error(f"argument --output: {e}")
    return args

def check_extra_eval_name(name):
    """InputError unless name can be an eval set's name: a letter, then letters, digits, '_'
    or '-' (at most 64), and not a dataset's name or file stem."""
    if not EXTRA_EVAL_NAME.match(name):
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise InputError(f"--extra-eval: {shown!r} is not a valid name (a letter, then up to 63 "
                         "letters, digits, '_' or '-')")
    stems = {d.stem: n for n, d in DATASETS.items()}
    if name in stems:
        raise InputError(f"--extra-eval: {name!r} is the file stem of dataset {stems[name]}")


def _extra_name(text):
    """argparse type: an --extra-eval name (see check_extra_eval_name)."""
    try:
        check_extra_eval_name(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[1]) from None
    return text


def budget_flag(text):
    """argparse type of --budget: 'base' or a sample count >= 1."""
    if text == "base":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a sample count >= 1 or 'base', got {text!r}")
    return str(n)


# --------------------------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors put the problem on the first line (then a usage hint).
    Flags are never abbreviated (--repeat is not --repeats); an unknown flag gets the flag it
    was probably meant as, or the script that takes it."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        """Print 'error: <flag>: <problem>' first, the usage after; exit 2."""
        sys.stderr.write(f"error: {message}\n")
        self.print_usage(sys.stderr)
        raise SystemExit(2)

    def parse_args(self, args=None, namespace=None):
        """The flags, or (exit 2) one line about the first unknown argument."""
        words = list(sys.argv[1:] if args is None else args)
        ns, extra = self.parse_known_args(words, namespace)
        if extra:
            sys.stderr.write(f"error: {self.unknown_argument(extra)}\n")
            raise SystemExit(2)
        ns.argv = tuple(words)          # the flags as given: hints repeat them
        return ns

    def unknown_argument(self, extra):
        """One line about the first unrecognized argument: the flag a typo probably meant, or
        the script that takes a flag of another script; then how to list every flag."""
        word = next((a for a in extra if a.startswith("-")), extra[0])
        flag = word.split("=", 1)[0]
        known = [s for s in self._option_string_actions if s.startswith("--")]
        script = Path(self.prog).name
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.7)
        if flag in FLAG_OWNERS and flag not in known:
            hint = f": a flag of {FLAG_OWNERS[flag]}, not of {script}"
        elif close and flag.startswith("--"):
            hint = f"; did you mean {close[0]}?"
        else:
            hint = ""
        return f"unrecognized argument {word}{hint} (every flag: {command(script, '--help')})"


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
    _add_fit_flags(p)
    return p


def _add_fit_flags(p):
    """The flags of the fits, the splits, the data and how the run executes."""
    d = DEFAULTS
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
    p.add_argument("--source-weight", choices=("proportional", "equal"),
                   default=d["source_weight"],
                   help="each source's share of the loss: by its size, or equal")
    p.add_argument("--extra-eval", type=_extra_name, nargs="+", default=None, metavar="NAME",
                   help="also evaluate <NAME>_activations.npy|.npz + <NAME>_labels.json|.npy whole, "
                        "at every step (never trained on)")
    p.add_argument("--sidecar-dir", type=_path, default=d["sidecar_dir"], metavar="DIR",
                   help="where the sparse sidecar copies of the activations go (default: next "
                        "to each .npy; use this when the cache folder is read-only)")
    p.add_argument("--no-sidecar", action="store_true",
                   help="neither read nor write sparse sidecars (convert the dense files)")
    p.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                   help="run the fits on an existing dask.distributed cluster (needs dask)")
    p.add_argument("--jobs", type=_bounded_int("jobs"), default=d["jobs"],
                   help="threads for the lockstep fits' products (L2); worker processes for "
                        "L1 fits and dask tasks; -1: all cores")
    p.add_argument("--quiet", action="store_true",
                   help="print only the answer (run_all.py), warnings and errors")


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
    extra = args.extra_eval or []
    if len(set(extra)) != len(extra):
        raise InputError("--extra-eval: " + next(n for n in extra if extra.count(n) > 1)
                         + " is given twice")
    if args.dask_scheduler is not None:
        check_dask_address(args.dask_scheduler)
    return Path(cache_dir), Path(results_dir)


DASK_ADDRESS = re.compile(r"^(?:(tcp|tls|ucx|ws|wss)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)"
                          r":(\d{1,5})$")


def check_dask_address(address):
    """InputError (one line, exit 2) unless address is [scheme://]host:port, the form a
    dask.distributed scheduler listens on (tcp://10.0.0.5:8786, host:8786, tls://[::1]:8786)."""
    m = DASK_ADDRESS.match(address.strip())
    if not address.strip():
        raise InputError("--dask-scheduler: empty address")
    if not m or not 1 <= int(m.group(3)) <= 65535:
        raise InputError(f"--dask-scheduler: {address!r} is not a scheduler address "
                         "(expected [tcp://]host:port, port 1-65535, e.g. tcp://10.0.0.5:8786)")


# --------------------------------------------------------------------------------------------
# The run's configuration
# --------------------------------------------------------------------------------------------
LOCAL = {"recorded": False}          # field metadata: where and how this command runs


@dataclass(frozen=True)
class RunConfig:
    """A run's configuration, built once from the flags (from_args) and never changed: a
    control or grid cell runs on a copy (dataclasses.replace). The fields up to `sidecar` are
    recorded, in this order, as `config` in every step JSON (record()); the last ones say only
    where this command runs (metadata LOCAL). Defaults are common.DEFAULTS."""
    cache_dir: str = str(DEFAULTS["cache_dir"])          # absolute path of the cache root
    layer: int = DEFAULTS["layer"]
    C: float = DEFAULTS["C"]
    penalty: str = DEFAULTS["penalty"]
    max_iter: int = DEFAULTS["max_iter"]
    tol: float = DEFAULTS["tol"]
    seed: int = DEFAULTS["seed"]
    eval_fraction: float = DEFAULTS["eval_fraction"]
    cv_folds: int = DEFAULTS["cv_folds"]
    feature_ids_file: str | None = None                  # --feature-ids as given
    feature_ids: tuple | None = None                     # its ids, once read (None: all)
    repeats: int = DEFAULTS["repeats"]
    dedup_split: bool = False
    near_dup_threshold: float = DEFAULTS["near_dup_threshold"]
    class_weight: str | None = None
    source_weight: str = DEFAULTS["source_weight"]
    extra_eval: tuple = ()
    budget_n: int | None = None                          # fixed-budget arm
    baseline: str | None = None                          # "format": format-only baseline
    jobs: int = DEFAULTS["jobs"]                         # RUN_ONLY_KEYS from here on
    quiet: bool = False
    dask_scheduler: str | None = None
    sidecar: str = "next to the .npy files"              # "off", a folder, or this
    results_dir: Path = field(default=DEFAULTS["results_dir"], metadata=LOCAL)
    demo: bool = field(default=False, metadata=LOCAL)
    sidecar_dir: Path | None = field(default=DEFAULTS["sidecar_dir"], metadata=LOCAL)
    use_sidecar: bool = field(default=True, metadata=LOCAL)
    grid_layers: tuple = field(default=(), metadata=LOCAL)      # --layers
    grid_C: tuple = field(default=(DEFAULTS["C"],), metadata=LOCAL)
    grid_penalty: tuple = field(default=(DEFAULTS["penalty"],), metadata=LOCAL)
    argv: tuple = field(default=(), metadata=LOCAL)             # the flags as given

    @classmethod
    def from_args(cls, args):
        """The configuration the flags of build_parser ask for (InputError for combinations
        the parser cannot check: see resolve_paths)."""
        cache_dir, results_dir = resolve_paths(args)
        sidecar = ("off" if args.no_sidecar else str(args.sidecar_dir) if args.sidecar_dir
                   else "next to the .npy files")
        return cls(
            cache_dir=str(cache_dir.resolve()), layer=args.layer, C=args.C[0],
            penalty=args.penalty[0], max_iter=args.max_iter, tol=args.tol, seed=args.seed,
            eval_fraction=args.eval_fraction, cv_folds=args.cv_folds,
            feature_ids_file=str(args.feature_ids) if args.feature_ids else None,
            repeats=args.repeats, dedup_split=args.dedup_split,
            near_dup_threshold=args.near_dup_threshold, class_weight=args.class_weight,
            source_weight=args.source_weight, extra_eval=tuple(args.extra_eval or ()),
            jobs=args.jobs, quiet=args.quiet, dask_scheduler=args.dask_scheduler,
            sidecar=sidecar, results_dir=results_dir, demo=args.demo,
            sidecar_dir=args.sidecar_dir, use_sidecar=not args.no_sidecar,
            grid_layers=tuple(args.layers or ()), grid_C=tuple(args.C),
            grid_penalty=tuple(args.penalty), argv=tuple(getattr(args, "argv", ())))

    def record(self):
        """The recorded configuration: a JSON-ready dict in field order (tuples as lists)."""
        return {f.name: _listed(getattr(self, f.name)) for f in fields(self)
                if f.metadata.get("recorded", True)}

    @property
    def feature_ids_path(self):
        """The --feature-ids file, or None."""
        return Path(self.feature_ids_file) if self.feature_ids_file else None

    @property
    def is_grid(self):
        """True when several layers, C or penalties were asked for."""
        return len(self.grid_C) > 1 or len(self.grid_penalty) > 1 or bool(self.grid_layers)


def _listed(value):
    """A tuple as a list (what JSON holds), anything else as it is."""
    return list(value) if isinstance(value, tuple) else value


# --------------------------------------------------------------------------------------------
# Config keys that never change a result
# --------------------------------------------------------------------------------------------
RUN_ONLY_KEYS = ("jobs", "quiet", "dask_scheduler", "sidecar")   # never change a number


def comparable(config):
    """Config without the keys that cannot change a result."""
    return {k: v for k, v in config.items() if k not in RUN_ONLY_KEYS}
