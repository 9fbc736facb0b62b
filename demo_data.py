"""python demo_data.py --out cache/demo [--seed 0] [--scale 1.0] [--n-features 16384] [--layers 40 ...]
       python demo_data.py --out cache/null_source --null source    # negative control

Write a SYNTHETIC SAE-activation cache in the layout of the real (private) cache, so the
distribution sweep can be demoed and tested end to end: two activation regimes, an AF signal
partly shared across distributions, benchmark hard negatives, near-duplicate sycophant
samples; --null writes a negative control whose OOD sets carry no AF signal. The generator and
its parameters are in sweeplib/demo.py; the same arguments always give byte-identical files.
"""
from __future__ import annotations

if __name__ == "__main__":      # first: Ctrl-C during the imports below is one line, exit 130
    from sweeplib import interrupt
    interrupt.install()

import sys

from common import DEMO_CACHE_DIR
from sweeplib.base import InputError
from sweeplib.config import Parser
from sweeplib.demo import DEFAULT_LAYER, DEFAULT_SEED, NULL_MODES, REF_FEATURES, check_request, cli


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
    p.add_argument("--quiet", action="store_true", help="do not print the statistics table")
    a = p.parse_args(argv)
    settings = {"seed": a.seed, "scale": a.scale, "n_features": a.n_features,
                "layers": a.layers, "null": a.null}
    try:
        check_request(a.out, **settings)          # flag values and --out, before any write
    except InputError as e:
        p.error(f"argument {e}" if str(e).startswith("--") else f"argument --out: {e}")
    return cli(a.out, verbose=not a.quiet, **settings)


if __name__ == "__main__":
    sys.exit(main())
