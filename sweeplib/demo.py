"""The synthetic demo cache generator (the command line is demo_data.py):

    generate(out_root, seed=0, scale=1.0, n_features=16384, layers=(40,), null=None)

Write a SYNTHETIC SAE-activation cache in the layout of the real (private) cache, so the
distribution sweep can be demoed and tested end to end.

The real cache holds, per text and SAE feature, the max activation over tokens of a 16,384-wide
SAE. Its published statistics (see REAL_DATA.md) fix the shape of this generator:

* Two activation regimes. "Training format" (train, gold_106): ~3,700 active features per sample,
  mean non-zero activation ~300. "OOD format" (sycophant, model_organism, benchmark): ~850 active
  features, values ~10x smaller, mostly on different features.
* The alignment-faking (AF) signal is partly shared across distributions and partly specific to
  each of them. Organisms do not carry the benchmark's intent features, so adding organisms does
  not fix the benchmark; benchmark hard negatives share "vocabulary" features with AF samples but
  not the intent features. Sycophant samples are short and contain near-duplicates.
* gold_106 is drawn from the training distribution with a slightly weaker signal.
* Negative controls (--null): the OOD sets carry no AF signal at all (no OOD latent depends on
  the label), while train and gold_106 keep theirs. "clean": every OOD set comes from one
  shared distribution; "source": each OOD source keeps its own features, in all of its rows, so
  all-AF sources differ from the benchmark's negatives by source alone (the real situation's
  confound). A sweep on them must not claim an OOD improvement.

Every sample is built from a few per-sample latent variables (verbosity, gain, intent, vocabulary,
...). Each block of features has a base activation probability and magnitude that these latents
shift. Values are the max over overlapping blocks, so they stay non-negative like SAE latents.

Output: ``<out>/layer_<L>/*.npy`` + ``*_labels.json`` and, written last, ``<out>/DEMO_CACHE.json``
(``DEMO_CACHE.partial.json`` marks the folder while it is written). All files are written
atomically; the same arguments always give byte-identical files. Settings and the folder are
checked first (demo_checks.py): a non-empty folder that is not a demo cache is never written.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from common import DEMO_MARKER
from sweeplib import demo_wide
from sweeplib.base import InputError, WriteError, atomic_write, die
from sweeplib.demo_checks import PARTIAL_MARKER, check_out, check_settings

# --------------------------------------------------------------------------------------------
# Generator parameters. Feature counts are given for the real SAE width (REF_FEATURES) and
# scale proportionally with n_features; sample counts scale with `scale`.
# --------------------------------------------------------------------------------------------
DEFAULT_SEED = 0
DEFAULT_LAYER = 40
REF_FEATURES = 16384                 # SAE width the statistics below refer to
MIN_CLASS_COUNT = 10                 # every class keeps >= 10 samples (20% held-out >= 2)

# Dataset sizes (full scale).
TRAIN_COUNTS = {"aligned": 2689 - 1057, "alignment_faking": 1057}   # train: 0/1 labels
GOLD_COUNTS = {"aligned": 106 - 51, "alignment_faking": 51}        # gold_106 (test_*)
SYCOPHANT_COUNT = 319                                               # all alignment_faking
ORGANISM_COUNT = 730                                                # all alignment_faking
BENCHMARK_COUNTS = {
    "alignment_faking": 520,
    "hard_negative": 520,
    "compliant_hard_negative": 520,
    "genuine_compliance": 520,
    "aligned": 250,
}

# Activation regimes per layer: (active features / training-format sample,
#                                active features / OOD-format sample) at 16,384 features.
LAYER_ACTIVE = {16: (4700, 3500), 31: (3700, 2700), 40: (3700, 850), 53: (3000, 1000)}
TRAIN_MAGNITUDE = 300.0              # mean non-zero activation, training format
OOD_MAGNITUDE = 31.0                 # mean non-zero activation, OOD format
SYC_SHARED_BOOST = {53: 1.6}         # layer 53 carries more shared AF signal for sycophant texts

# Background features (no label information).
POOL_MEAN_P = 0.55                   # mean activation probability of a background feature
POOL_KAPPA = 2.0                     # Beta concentration of those probabilities (low = spread)
FEATURE_LOG_SD = 0.7                 # spread of per-feature typical magnitude (log scale)
VALUE_LOG_SD = 0.5                   # per-sample, per-feature magnitude noise (log scale)
VERBOSITY_SD = 0.5                   # per-sample logit shift of every background feature
GAIN_SD = 0.15                       # per-sample log-magnitude shift of every feature
OVERLAP_FRAC = 0.70                  # fraction of OOD background features also used by training format
SIGNAL_ON_RATE = (0.7, 0.22)         # typical fraction of signal/style features active per sample
                                     # (training format, OOD format); the background pool is shrunk
                                     # by that many so the totals match LAYER_ACTIVE at any width
AF_VERBOSITY = 0.3                   # training-format AF scratchpads are longer: logit shift ...
AF_GAIN = 0.1                        # ... and log-magnitude shift of every feature
SYC_VERBOSITY = -0.4                 # sycophant texts are short: fewer active features
SYC_DUP_FRAC = 0.25                  # fraction of sycophant samples that are near-copies of another
SYC_DUP_NOISE = 0.04                 # log-magnitude jitter of a near-copy

# Signal blocks: (features at 16,384, floor, base activation probability,
#                 logit loading on the block's latent, log-magnitude loading).
# A latent is d * (class membership) + N(0, 1); the d values are listed below.
SIGNAL_BLOCKS = {
    "train_intent":   (300, 16, 0.30, 1.0, 0.15),   # training-format AF intent
    "train_negative": (60, 4, 0.10, 0.8, 0.10),    # training-format honest-reasoning features
    "shared_intent":  (60, 6, 0.05, 1.0, 0.10),    # OOD-format AF intent shared by all OOD sets
    "style":          (160, 6, 0.35, 1.0, 0.00),   # per-OOD-dataset format features (latent: verbosity)
    "own_intent":     (80, 6, 0.08, 1.2, 0.10),    # sycophant / organism specific AF features
    "bench_intent":   (100, 32, 0.05, 1.0, 0.15),   # benchmark AF intent
    "bench_vocab":    (100, 6, 0.05, 1.2, 0.10),   # RLHF vocabulary: AF + both hard-negative kinds
    "bench_comply":   (60, 4, 0.08, 1.2, 0.10),    # compliance features
    "bench_refuse":   (60, 4, 0.08, 1.2, 0.10),    # refusal / honest-disagreement features
}
D_TRAIN = 3.5                        # AF intent separation in train
D_GOLD = 3.0                         # ... in gold_106 (same distribution, a bit harder)
D_TRAIN_NEG = 0.5                    # honest-reasoning separation (negatives higher)
D_OWN = 2.0                          # sycophant / organism own AF features
D_SHARED = {"sycophant": 1.0, "model_organism": 1.0, "benchmark": 0.3}
D_BENCH = 2.6                        # benchmark AF intent separation
D_BENCH_AUX = 2.0                    # separation of vocabulary / compliance / refusal latents
# Benchmark fine classes -> membership in (bench_vocab, bench_comply, bench_refuse).
BENCH_CLASS_LATENTS = {
    "alignment_faking":        (1.0, 0.5, 0.0),
    "hard_negative":           (1.0, 0.0, 1.0),
    "compliant_hard_negative": (1.0, 1.0, 0.0),
    "genuine_compliance":      (0.0, 1.0, 0.0),
    "aligned":                 (0.0, 0.0, 1.0),
}

NEAR_DUP_COSINE = 0.99               # threshold for counting near-duplicate sycophant pairs
CHUNK_ROWS = 256                     # rows generated at once (bounds memory)
AF = "alignment_faking"
OOD_DATASETS = ("sycophant", "model_organism", "benchmark")
NULL_MODES = (None, "clean", "source")   # negative controls: no AF signal in the OOD sets
# --conflict C (trade-off): the benchmark gets train_intent on C * (hard negative) - 2 + N(0, 1)
CONFLICT_LOADS = {"conflict": (1.0, 0.15), "gain": (0.0, 1.0)}


# --------------------------------------------------------------------------------------------
# Feature layout
# --------------------------------------------------------------------------------------------
def _rng(seed: int, layer: int, stream: int) -> np.random.Generator:
    """Independent, reproducible generator for one (seed, layer, stream)."""
    return np.random.Generator(np.random.PCG64([int(seed), int(layer), int(stream)]))


def _n_feats(ref_count: float, n_features: int, floor: int = 1) -> int:
    """Feature count scaled from the 16,384-wide reference to n_features."""
    return max(floor, int(round(ref_count * n_features / REF_FEATURES)))


def _block(rng, feats, p_mean, magnitude, loads, kappa=None):
    """One block of features: base logit, log-magnitude and per-feature latent loadings."""
    k = len(feats)
    if kappa is None:
        p = np.full(k, p_mean)
    else:
        p = rng.beta(kappa * p_mean, kappa * (1.0 - p_mean), size=k)
    p = np.clip(p, 0.01, 0.99)
    logmag = (np.log(magnitude) - 0.5 * (FEATURE_LOG_SD**2 + VALUE_LOG_SD**2)
              + FEATURE_LOG_SD * rng.standard_normal(k))
    coefs = {}
    for name, (logit_c, mag_c, jitter) in loads.items():
        f = rng.uniform(1 - jitter, 1 + jitter, size=k) if jitter else np.ones(k)
        coefs[name] = (logit_c * f, mag_c * f)
    return {"feats": np.asarray(feats, dtype=np.int64), "logit0": np.log(p / (1 - p)),
            "logmag": logmag, "loads": coefs}


def _layout(seed: int, layer: int, n_features: int, null=None) -> dict:
    """Assign features to blocks for one layer; returns {format or dataset: [blocks]}.
    null="clean": the OOD sets share one layout with no source-specific blocks."""
    rng = _rng(seed, layer, 0)
    train_active, ood_active = LAYER_ACTIVE.get(layer, LAYER_ACTIVE[DEFAULT_LAYER])
    perm = rng.permutation(n_features)
    pos = 0

    def take(k):
        """The next k features of the seeded permutation."""
        nonlocal pos
        if pos + k > n_features:
            raise ValueError(f"n_features={n_features} too small for the feature layout")
        out = perm[pos:pos + k]
        pos += k
        return out

    sizes = {name: _n_feats(ref, n_features, floor) for name, (ref, floor, *_r) in SIGNAL_BLOCKS.items()}
    n_train_sig = sizes["train_intent"] + sizes["train_negative"]
    n_ood_sig = sum(sizes[k] for k in SIGNAL_BLOCKS if not k.startswith(("train", "own")))
    scale_f = n_features / REF_FEATURES
    n_train_bg = max(8, round((train_active * scale_f - SIGNAL_ON_RATE[0] * n_train_sig) / POOL_MEAN_P))
    n_ood_bg = max(8, round((ood_active * scale_f - SIGNAL_ON_RATE[1] * n_ood_sig) / POOL_MEAN_P))
    n_overlap = int(round(OVERLAP_FRAC * n_ood_bg))

    train_bg = take(n_train_bg)
    ood_bg = np.concatenate([train_bg[:n_overlap], take(n_ood_bg - n_overlap)])

    def sig(name, latent, feats=None):
        """A signal block of the given name loaded on a latent."""
        _ref, _floor, p0, logit_c, mag_c = SIGNAL_BLOCKS[name]
        f = take(sizes[name]) if feats is None else feats
        return _block(rng, f, p0, TRAIN_MAGNITUDE if name.startswith("train") else OOD_MAGNITUDE,
                      {latent: (logit_c, mag_c, 0.5), "gain": (0.0, 1.0, 0.0)})

    bg = {"verbosity": (1.0, 0.0, 0.0), "gain": (0.0, 1.0, 0.0)}
    train_blocks = [
        _block(rng, train_bg, POOL_MEAN_P, TRAIN_MAGNITUDE, bg, kappa=POOL_KAPPA),
        sig("train_intent", "intent"),
        sig("train_negative", "negative"),
    ]
    ood_common = [
        _block(rng, ood_bg, POOL_MEAN_P, OOD_MAGNITUDE, bg, kappa=POOL_KAPPA),
        sig("shared_intent", "shared"),
    ]
    layout = {"train": train_blocks}
    for name in OOD_DATASETS:
        _ref, _floor, p0, logit_c, mag_c = SIGNAL_BLOCKS["style"]
        style = _block(rng, take(sizes["style"]), p0, OOD_MAGNITUDE,
                       {"verbosity": (logit_c, mag_c, 0.0), "gain": (0.0, 1.0, 0.0)}, kappa=POOL_KAPPA)
        layout[name] = ood_common + [style]
    if null == "clean":                   # one distribution for every OOD set
        return {"train": train_blocks, **{n: layout["benchmark"] for n in OOD_DATASETS}}
    layout["sycophant"].append(sig("own_intent", "own"))
    layout["model_organism"].append(sig("own_intent", "own"))
    layout["benchmark"] += [sig("bench_intent", "intent"), sig("bench_vocab", "vocab"),
                            sig("bench_comply", "comply"), sig("bench_refuse", "refuse")]
    return layout


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------
def _sample(rng, n: int, n_features: int, blocks: list, latents: dict) -> np.ndarray:
    """Dense (n, n_features) float32 activations: max over blocks of Bernoulli x lognormal."""
    X = np.zeros((n, n_features), dtype=np.float32)
    for r0 in range(0, n, CHUNK_ROWS):
        r1 = min(n, r0 + CHUNK_ROWS)
        for b in blocks:
            k = len(b["feats"])
            logit = np.broadcast_to(b["logit0"], (r1 - r0, k)).copy()
            logmag = np.broadcast_to(b["logmag"], (r1 - r0, k)).copy()
            for name, (lc, mc) in b["loads"].items():
                z = latents[name][r0:r1, None]
                logit += z * lc
                logmag += z * mc
            active = rng.random((r1 - r0, k)) < 1.0 / (1.0 + np.exp(-logit))
            vals = np.exp(logmag + VALUE_LOG_SD * rng.standard_normal((r1 - r0, k)))
            vals = np.where(active, vals, 0.0).astype(np.float32)
            X[r0:r1, b["feats"]] = np.maximum(X[r0:r1, b["feats"]], vals)
    return X


def _counts(counts: dict, scale: float) -> dict:
    """Per-class counts after scaling, each >= MIN_CLASS_COUNT."""
    return {k: max(MIN_CLASS_COUNT, int(round(v * scale))) for k, v in counts.items()}


def _shuffled_labels(rng, counts: dict) -> list:
    """Fine labels in a seeded random order."""
    labels = np.array([k for k, v in counts.items() for _ in range(v)], dtype=object)
    return list(labels[rng.permutation(len(labels))])


def _base_latents(rng, n: int, verbosity_mean: float = 0.0) -> dict:
    """Nuisance latents every sample has."""
    return {"verbosity": verbosity_mean + VERBOSITY_SD * rng.standard_normal(n),
            "gain": GAIN_SD * rng.standard_normal(n)}


def _latent(rng, member: np.ndarray, d: float) -> np.ndarray:
    """d * membership + standard normal noise."""
    return d * member + rng.standard_normal(len(member))


def _make_dataset(name: str, layout: dict, seed: int, layer: int, scale: float, n_features: int,
                  null=None, conflict=0.0):
    """Return (X, fine_labels) for one dataset. With null set, no OOD latent depends on the
    label: "clean" draws every OOD set from one distribution, "source" keeps each source's own
    features (active in all its rows, AF or not)."""
    stream = {"train": 1, "gold": 2, "sycophant": 3, "model_organism": 4, "benchmark": 5}[name]
    rng = _rng(seed, layer, stream)
    if name in ("train", "gold"):
        labels = _shuffled_labels(rng, _counts(TRAIN_COUNTS if name == "train" else GOLD_COUNTS, scale))
        y = np.array([lab == AF for lab in labels], dtype=float)
        lat = _base_latents(rng, len(y))
        lat["verbosity"] += AF_VERBOSITY * y
        lat["gain"] += AF_GAIN * y
        lat["intent"] = _latent(rng, y, D_TRAIN if name == "train" else D_GOLD)
        lat["negative"] = _latent(rng, 1 - y, D_TRAIN_NEG)
        return _sample(rng, len(y), n_features, layout["train"], lat), labels
    if name in ("sycophant", "model_organism"):
        n = max(MIN_CLASS_COUNT, int(round((SYCOPHANT_COUNT if name == "sycophant" else ORGANISM_COUNT) * scale)))
        labels = [AF] * n
        ones = np.ones(n)
        syco = name == "sycophant" and null != "clean"
        lat = _base_latents(rng, n, SYC_VERBOSITY if syco else 0.0)
        boost = SYC_SHARED_BOOST.get(layer, 1.0) if name == "sycophant" else 1.0
        lat["shared"] = _latent(rng, ones * (null is None), D_SHARED[name] * boost)
        lat["own"] = _latent(rng, ones, D_OWN)
        X = _sample(rng, n, n_features, layout[name], lat)
        if syco:
            _add_near_duplicates(rng, X)
        return X, labels
    labels = _shuffled_labels(rng, _counts(BENCHMARK_COUNTS, scale))
    y = np.array([lab == AF for lab in labels], dtype=float)
    member = np.array([BENCH_CLASS_LATENTS[lab] for lab in labels])
    if null is not None:                  # label-free: the source's own features in every row
        y = np.zeros_like(y) if null == "clean" else np.ones_like(y)
        member = np.broadcast_to(y[:, None], member.shape)
    lat = _base_latents(rng, len(y))
    lat["shared"] = _latent(rng, y, D_SHARED["benchmark"])
    lat["intent"] = _latent(rng, y, D_BENCH)
    for j, key in enumerate(("vocab", "comply", "refuse")):
        lat[key] = _latent(rng, member[:, j], D_BENCH_AUX)
    lat["conflict"] = _latent(rng, member[:, 0] * (1 - y), conflict) - 2.0 if conflict else None
    return _sample(rng, len(y), n_features, layout["benchmark"], lat), labels


def _add_near_duplicates(rng, X: np.ndarray) -> None:
    """Overwrite a fraction of rows with jittered copies of other rows (in place)."""
    n = len(X)
    n_dup = int(round(SYC_DUP_FRAC * n))
    if n_dup == 0 or n - n_dup < 1:
        return
    order = rng.permutation(n)
    copies, sources = order[:n_dup], order[n_dup:]
    src = sources[rng.integers(0, len(sources), size=n_dup)]
    for c, s in zip(copies, src):
        jitter = np.exp(SYC_DUP_NOISE * rng.standard_normal(X.shape[1])).astype(np.float32)
        X[c] = X[s] * jitter


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------
def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two profiles."""
    return float(np.corrcoef(a, b)[0, 1])


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def _save_npy(path: Path, arr: np.ndarray) -> None:
    """Atomic np.save without pickle."""
    atomic_write(path, lambda fh: np.save(fh, arr, allow_pickle=False))


def _save_json(path: Path, obj: dict) -> None:
    """Atomic JSON write."""
    atomic_write(path, (json.dumps(obj, indent=1) + "\n").encode())


FILE_STEMS = {"train": "train", "gold": "test", "sycophant": "sycophant",
              "model_organism": "model_organism", "benchmark": "benchmark"}


def _generate_layer(out_dir: Path, seed: int, layer: int, scale: float, n_features: int,
                    null=None, variant=None, sparse=False, density="real", conflict=0.0) -> dict:
    """Write one layer folder; return its statistics (variant: demo_truth; width: demo_wide)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    width = demo_wide.layout_width(n_features, density, REF_FEATURES)
    layout = (variant.layout if variant else _layout)(seed, layer, width, null)
    if conflict:                 # CONFLICT_LOADS
        layout["benchmark"] = layout["benchmark"] + [{**layout["train"][1], "loads": CONFLICT_LOADS}]
    stats, profiles = {}, {}
    for name in ("train", "gold", "sycophant", "model_organism", "benchmark"):
        X, labels = (variant.dataset(name, layout, seed, layer, scale, width, null) if variant
                     else _make_dataset(name, layout, seed, layer, scale, width, null, conflict))
        for suffix, sibling in variant.siblings(name, X, seed, layer) if variant else ():
            _save_npy(out_dir / f"{FILE_STEMS[name]}_{suffix}.npy", sibling)
        if sparse or width != n_features:     # one feature split for every dataset
            X = demo_wide.widen(X, n_features, lambda key: _rng(seed, layer, key),
                                _rng(seed, layer, 100))
        y = np.array([lab == AF for lab in labels])
        stem = FILE_STEMS[name]
        demo_wide.save_activations(out_dir / stem, X, sparse)
        if name in ("train", "gold"):
            _save_npy(out_dir / f"{stem}_labels.npy", y.astype(np.int64))
        else:
            _save_json(out_dir / f"{stem}_labels.json",
                       {"labels": labels, "unique_labels": sorted(set(labels)), "layer": layer,
                        "note": "synthetic demo data"})
        active, magnitude = demo_wide.row_stats(X)
        stats[name] = {"n": len(labels), "af": int(y.sum()), "active_per_sample": active,
                       "mean_nonzero": magnitude}
        profiles[name] = demo_wide.column_means(X)
        if name == "train":
            profiles["train_af"] = demo_wide.column_means(X[y])
        if name == "sycophant":
            stats[name]["near_duplicate_pairs"] = demo_wide.near_duplicate_pairs(
                X, NEAR_DUP_COSINE)
        del X
    return {
        "datasets": stats,
        "benchmark_vs_train_af_corr": _corr(profiles["benchmark"], profiles["train_af"]),
        "gold_vs_train_corr": _corr(profiles["gold"], profiles["train"]),
        "sycophant_near_duplicate_pairs": stats["sycophant"]["near_duplicate_pairs"],
    }


def _print_layer(layer: int, s: dict) -> None:
    """Aligned table of one layer's statistics."""
    print(f"layer {layer}")
    print(f"  {'dataset':<16}{'n':>6}{'AF':>6}{'active/sample':>15}{'mean non-zero':>15}")
    for name, d in s["datasets"].items():
        print(f"  {name:<16}{d['n']:>6}{d['af']:>6}{d['active_per_sample']:>15.0f}"
              f"{d['mean_nonzero']:>15.1f}")
    print(f"  benchmark profile vs train AF profile, correlation: {s['benchmark_vs_train_af_corr']:.3f}")
    print(f"  gold_106 profile vs train profile, correlation:     {s['gold_vs_train_corr']:.3f}")
    print(f"  sycophant near-duplicate pairs (cosine >= {NEAR_DUP_COSINE}): "
          f"{s['sycophant_near_duplicate_pairs']}")


def _rows(scale):
    """Rows of one layer's five datasets at a scale."""
    n = sum(sum(_counts(c, scale).values()) for c in (TRAIN_COUNTS, GOLD_COUNTS, BENCHMARK_COUNTS))
    return n + sum(max(MIN_CLASS_COUNT, int(round(k * scale)))
                   for k in (SYCOPHANT_COUNT, ORGANISM_COUNT))


def check_request(out_root, *, seed=DEFAULT_SEED, scale=1.0, n_features=REF_FEATURES,
                  layers=(DEFAULT_LAYER,), null=None, variant=None, sparse=False, density="real",
                  conflict=0.0):
    """InputError ('--flag: problem') unless generate() can honour the request without
    touching anything it should not (see demo_checks.py)."""
    if null not in NULL_MODES:
        raise InputError(f"--null: must be one of {NULL_MODES[1:]}, got {null!r}")
    demo_wide.check_request(variant, sparse, density, n_features, REF_FEATURES)
    check_settings(seed, scale, n_features, layers, _rows, sparse=sparse,
                   size_width=demo_wide.layout_width(n_features, density, REF_FEATURES))
    for layer in sorted(set(layers)):
        if not _layout_fits(seed, layer, min(n_features, REF_FEATURES), null, variant):
            least = next(n for n in range(n_features + 1, REF_FEATURES + 1)
                         if _layout_fits(seed, layer, n, null, variant))
            raise InputError(f"--n-features: {n_features} is too small for the feature layout "
                             f"(at least {least})")
    check_out(out_root)


def _layout_fits(seed, layer, n_features, null, variant=None):
    """True when a layer's feature layout fits in n_features."""
    try:
        (variant.layout if variant else _layout)(seed, layer, n_features, null)
    except ValueError:
        return False
    return True


def generate(out_root, *, seed=DEFAULT_SEED, scale=1.0, n_features=REF_FEATURES, layers=(DEFAULT_LAYER,),
             verbose=True, null=None, variant=None, sparse=False, density="real",
             conflict=0.0) -> dict:
    """Write a synthetic cache under out_root; return a summary dict of the printed statistics.
    InputError (nothing written) for bad settings or a folder that is not new, empty or a demo
    cache (check_request). sparse: .npz activations; density: demo_wide.py."""
    check_request(out_root, seed=seed, scale=scale, n_features=n_features, layers=layers,
                  null=null, variant=variant, sparse=sparse, density=density)
    layers = [int(layer) for layer in layers]
    out_root = Path(out_root)
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--out: {out_root}: cannot create the folder ({e.strerror})") from None
    settings = {"synthetic": True, "generator": "demo_data.py", "seed": int(seed),
                "scale": float(scale), "n_features": int(n_features), "layers": layers,
                "null": null, **(variant.settings if variant else {}),
                **({"conflict": float(conflict)} if conflict else {})}
    settings.update(demo_wide.marker(sparse, density, n_features, REF_FEATURES))
    partial = out_root / PARTIAL_MARKER
    _save_json(partial, {**settings, "complete": False})    # first: the folder stays ours
    marker = out_root / DEMO_MARKER
    if marker.exists():
        marker.unlink()                     # a cache being rewritten is incomplete until the end
    t0 = time.perf_counter()
    summary = {"out": str(out_root), "seed": int(seed), "scale": float(scale),
               "n_features": int(n_features), "layers": {}}
    for layer in layers:
        s = _generate_layer(out_root / f"layer_{layer}", int(seed), layer, float(scale), int(n_features),
                            null, variant, sparse, density, float(conflict))
        summary["layers"][layer] = s
        if verbose:
            _print_layer(layer, s)
    summary["seconds"] = time.perf_counter() - t0
    _save_json(marker, settings)
    partial.unlink()
    if verbose:
        kind = f" (negative control: null={null}, OOD sets carry no AF signal)" if null else ""
        kind += variant.describe() if variant else ""
        print(f"wrote synthetic cache to {out_root}{kind} in {summary['seconds']:.1f} s")
    return summary


def cli(out_root, **settings) -> int:
    """demo_data.py's run: generate, one error line and an exit code for what goes wrong
    (2 bad input, 1 a file could not be written)."""
    try:
        generate(out_root, **settings)
    except InputError as e:
        return die(str(e))
    except WriteError as e:
        print(f"error: {e}; the demo cache in {out_root} is incomplete (run again)",
              file=sys.stderr)
        return 1
    return 0
