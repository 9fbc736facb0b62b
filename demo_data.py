"""python demo_data.py --out cache/demo [--seed 0] [--scale 1.0] [--n-features 16384] [--layers 40 ...]
       python demo_data.py --out /tmp/wide --n-features 262144 --sparse   # a wide SAE's sparse cache
       python demo_data.py --out cache/null_source --null source    # negative control
       python demo_data.py --out cache/truth_method --truth method [--mechanism spurious]
       python demo_data.py --out cache/truth_data --truth data [--mean-pooled]
       python demo_data.py --out cache/tradeoff --conflict 3 --fresh 20000   # + population truth

Write a SYNTHETIC SAE-activation cache in the layout of the real (private) cache, so the
distribution sweep can be demoed and tested end to end: two activation regimes, an AF signal
partly shared across distributions, benchmark hard negatives, near-duplicate sycophant
samples; --null writes a negative control whose OOD sets carry no AF signal; --truth writes a
cache where the cause of the OOD failure is known (the method or the data; sweeplib/demo_truth.py).
The generator and its parameters are in sweeplib/demo.py; the same arguments always give
byte-identical files.
"""
from __future__ import annotations

if __name__ == "__main__":      # first: Ctrl-C during the imports below is one line, exit 130
    from sweeplib import interrupt
    interrupt.install()

import sys

from common import DEMO_CACHE_DIR
from sweeplib.base import InputError
from sweeplib import demo_fresh
from sweeplib.config import Parser
from sweeplib.demo import DEFAULT_LAYER, DEFAULT_SEED, NULL_MODES, REF_FEATURES, check_request, cli
from sweeplib.demo_truth import MECHANISMS, TRUTHS, Variant
from sweeplib.demo_wide import DENSITIES


def _check_fresh_flags(p, a) -> None:
    """Exit 2 (one line) for --fresh / --conflict values generate() cannot honour."""
    if a.fresh and (a.sparse or a.n_features > REF_FEATURES):
        p.error("argument --fresh: only for dense demo caches of at most 16,384 features")
    if a.conflict < 0 or a.fresh < 0 or a.fresh == 1 or (a.truth and (a.fresh or a.conflict)):
        p.error("argument --conflict/--fresh: must be >= 0 (--fresh: 0 or at least 2 rows), "
                "and not with --truth")


def main(argv=None) -> int:
    """Command-line entry point."""
    p = Parser(description="Write a synthetic demo SAE-activation cache.")
    p.add_argument("--out", default=str(DEMO_CACHE_DIR),
                   help="output folder (gets layer_<L>/ subfolders and DEMO_CACHE.json)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    p.add_argument("--scale", type=float, default=1.0, help="multiplier for every per-class count")
    p.add_argument("--n-features", type=int, default=REF_FEATURES, help="SAE width")
    p.add_argument("--layers", type=int, nargs="+", default=[DEFAULT_LAYER], help="layers to write")
    p.add_argument("--null", choices=NULL_MODES[1:], default=None,
                   help="negative control: OOD sets carry no AF signal ('clean': one shared OOD "
                        "distribution; 'source': each OOD source keeps its own features)")
    p.add_argument("--truth", choices=TRUTHS, default=None,
                   help="plant the cause of the OOD failure: 'method' (one intent shared by every "
                        "source; the training format misleads a dense LR probe) or 'data' (the OOD "
                        "intent lives on features no training-format row carries)")
    p.add_argument("--mechanism", choices=MECHANISMS, default=None,
                   help="with --truth method: what misleads the dense probe ('scale', default: OOD "
                        "features rare and faint in training format, blown up by the scaler; "
                        "'spurious': a training-only cue the probe leans on)")
    p.add_argument("--mean-pooled", action="store_true",
                   help="also write <stem>_mean_activations.npy (mean-pooled siblings)")
    p.add_argument("--conflict", type=float, default=0.0,
                   help="a real in-distribution trade-off: the benchmark's hard negatives also "
                        "carry the training-format intent features at this strength (0: none)")
    p.add_argument("--fresh", type=int, default=0, metavar="N",
                   help="also write N fresh rows of gold_106's distribution to <out>_fresh/ "
                        "(beside the cache, never inside; benchmarks/calibration.py)")
    p.add_argument("--sparse", action="store_true",
                   help="write <stem>_activations.npz (scipy.sparse.save_npz) instead of .npy")
    p.add_argument("--density", choices=DENSITIES, default="real",
                   help="above 16,384 features: 'real' keeps ~3,700 / ~850 active features per "
                        "row (features split into finer ones); 'proportional' grows them with "
                        "the width")
    p.add_argument("--quiet", action="store_true", help="do not print the statistics table")
    a = p.parse_args(argv)
    _check_fresh_flags(p, a)
    settings = {"seed": a.seed, "scale": a.scale, "n_features": a.n_features,
                "layers": a.layers, "null": a.null, "conflict": a.conflict,
                "sparse": a.sparse, "density": a.density}
    try:
        if a.truth and a.null:
            raise InputError("--truth: cannot be combined with --null (a null has no planted cause)")
        if a.truth or a.mean_pooled:
            settings["variant"] = Variant(a.truth, a.mechanism, a.mean_pooled)
        elif a.mechanism:
            raise InputError("--mechanism: only with --truth method")
        check_request(a.out, **settings)          # flag values and --out, before any write
    except InputError as e:
        p.error(f"argument {e}" if str(e).startswith("--") else f"argument --out: {e}")
    rc = cli(a.out, verbose=not a.quiet, **settings)
    if rc == 0 and a.fresh:
        for key in ("scale", "conflict", "variant", "sparse", "density"):
            settings.pop(key, None)
        out = demo_fresh.generate(a.out, a.fresh, **settings)
        if not a.quiet:
            print(f"wrote {a.fresh} fresh in-distribution rows to {out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
