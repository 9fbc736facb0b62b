"""Truth-known demo caches (the command line is demo_data.py --truth method|data):

    Variant(truth="method", mechanism="scale"|"spurious") | Variant(truth="data") | Variant(None, mean_pooled=True)
    demo.generate(out_root, ..., variant=Variant(...))

The default demo (demo.py) answers "does diversity help?"; these caches answer "is the OOD failure
the data or the method?" with a planted cause. They keep the real cache's layout, sizes and the
two activation regimes (training format ~3,700 active features of ~300; OOD format ~850 of ~31).

* ``method``: ONE intent block shared by every source (the same features fire with AF intent in
  train, gold_106, sycophant, organisms and benchmark, ~10x fainter in OOD format), and
  something in the training format that misleads a dense StandardScaler + LR (C = 10) probe, so
  a different probe trained on step 0's data alone generalizes. Two mechanisms:

  - ``scale`` (default; the published failure): the OOD format's own features (the 30 % of its
    background the training format does not use) do occur in training-format rows, rarely
    (2 %) and faintly (~30 instead of ~300). The scaler fitted on training rows divides them by
    a tiny standard deviation, so OOD rows, where they are common, land far out along features
    whose LR weights are fitted noise; the ranking of OOD rows is then mostly noise (benchmark
    AUROC ~0.55). A global scale change alone cannot move a linear probe's AUROC; this per-feature
    division is what does. Mass-mean, k-sparse, L1 and row-normalized mass-mean probes ignore
    those features (~0.92).
  - ``spurious``: a training-format-only cue (a small block, "the scratchpad talks about being
    trained") that separates AF from aligned rows far better than the intent, and that shares
    a per-row nuisance with the intent block ("how explicit the scratchpad is"). The dense LR
    uses the intent features as a correction to the cue, with NEGATIVE weight (a suppressor),
    and is inverted where the cue is absent (benchmark ~0.3); a difference-of-means probe
    weights the intent positively (~0.87).

  Diverse data fix both too (step 3 trains on benchmark rows), so the full answer on these
  caches is ``both``; what they test is that the method half is found.
* ``data``: the OOD intent lives on features no training-format row carries (disjoint blocks);
  nothing in the training format separates the benchmark's classes, so no probe trained on
  step 0's data is above chance there (~0.5), while the sweep's later steps, which train on OOD
  rows, fix it. The right answer is ``data``.

In every truth the benchmark's classes fire two of four equal content blocks each (vocabulary,
compliance, refusal, task) and its negatives an "honest" block the size of the intent block, so
AF and negative rows are equally dense and equally large: a row-normalized probe cannot rank
them by norm (it did, 0.54, with the default demo's unequal blocks).

``mean_pooled=True`` (``--mean-pooled``, with or without a truth) also writes
``<stem>_mean_activations.npy``: each entry the max-pooled value times a per-row dilution and a
per-entry fraction, so mean <= max, zero where max is zero (its own random stream: the
max-pooled files are the same with or without it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sweeplib import demo
from sweeplib.base import InputError

TRUTHS = ("method", "data")
MECHANISMS = ("scale", "spurious")          # for truth="method"; the first is the default

# Blocks (features at 16,384, floor). Sizes scale with the width like demo.py's.
INTENT = (200, 12)                          # the intent block (shared, or one per format for data)
SPURIOUS = (96, 12)                         # training-format-only cue (mechanism spurious) ...
CUE_P, CUE_LOADS = 0.05, (0.8, 0.10)        # ... its base probability, logit and log-magnitude loads
# Benchmark content blocks, all of one size; every class fires exactly two of them, and the
# negatives carry an "honest" block the size of the intent block: AF and negative rows are
# equally dense and equally large (no probe can rank them by density or row norm).
BENCH_AUX = {"vocab": (80, 6), "comply": (80, 6), "refuse": (80, 6), "task": (80, 6)}
BENCH_CLASS_BLOCKS = {                      # class -> membership in the BENCH_AUX blocks
    "alignment_faking":        (1.0, 1.0, 0.0, 0.0),    # RLHF vocabulary, complies
    "hard_negative":           (1.0, 0.0, 1.0, 0.0),
    "compliant_hard_negative": (1.0, 1.0, 0.0, 0.0),    # differs from AF by intent alone
    "genuine_compliance":      (0.0, 1.0, 0.0, 1.0),
    "aligned":                 (0.0, 0.0, 1.0, 1.0),
}
BG_SHARE = (0.9, 0.94)                      # share of the active counts made by background
                                            # (training format, OOD format); the rest is signal
FAINT_P, FAINT_MAGNITUDE = 0.02, 30.0       # scale: OOD-format features in training rows

# Latent separations (d * membership + N(0, 1)).
D_TRAIN = {"scale": 5.0, "data": 5.0}       # intent in train; gold_106 is 0.5 weaker
D_SPUR_INTENT, D_SPUR_CUE, SPUR_NUISANCE = 1.0, 8.0, 1.5   # spurious: intent, cue, shared nuisance
D_OOD = {"sycophant": 2.0, "model_organism": 2.0, "benchmark": 2.6}
STREAM0 = 20                                # random streams of these caches (demo.py uses 0-5)
STREAMS = {"train": 1, "gold": 2, "sycophant": 3, "model_organism": 4, "benchmark": 5}
MEAN_DILUTION = (1.5, 0.3)                  # mean-pooled: per-row log dilution (mean, sd) ...
MEAN_ENTRY_SD = 0.8                         # ... and per-entry |N(0, sd)| on the log scale


@dataclass(frozen=True)
class Variant:
    """What demo.generate writes instead of the default demo: a planted truth (None: the default
    demo's datasets), and whether mean-pooled siblings are written."""
    truth: str | None = None
    mechanism: str | None = None
    mean_pooled: bool = False

    def __post_init__(self):
        """InputError ('--flag: problem') for a combination the generator cannot write."""
        if self.truth not in (None,) + TRUTHS:
            raise InputError(f"--truth: must be one of {TRUTHS}, got {self.truth!r}")
        if self.mechanism is not None and self.truth != "method":
            raise InputError("--mechanism: only with --truth method")
        if self.truth == "method" and self.mechanism not in (None,) + MECHANISMS:
            raise InputError(f"--mechanism: must be one of {MECHANISMS}, got {self.mechanism!r}")
        if self.truth == "method" and self.mechanism is None:
            object.__setattr__(self, "mechanism", MECHANISMS[0])

    @property
    def kind(self) -> str:
        """'scale', 'spurious' or 'data' (the generator's branch)."""
        return self.mechanism if self.truth == "method" else "data"

    @property
    def settings(self) -> dict:
        """Keys added to DEMO_CACHE.json."""
        return {"truth": self.truth, "mechanism": self.mechanism, "mean_pooled": self.mean_pooled}

    def describe(self) -> str:
        """Words for the generator's last line."""
        what = f" (truth: {self.truth}" + (f", mechanism {self.mechanism})" if self.mechanism
                                          else ")") if self.truth else ""
        return what + (", with mean-pooled activations" if self.mean_pooled else "")

    def layout(self, seed: int, layer: int, n_features: int, null=None) -> dict:
        """The feature layout of one layer (ValueError when it does not fit)."""
        if self.truth is None:
            return demo._layout(seed, layer, n_features, null)
        return _layout(self.kind, seed, layer, n_features)

    def dataset(self, name, layout, seed, layer, scale, n_features, null=None):
        """(X, fine labels) of one dataset."""
        if self.truth is None:
            return demo._make_dataset(name, layout, seed, layer, scale, n_features, null)
        return _dataset(self.kind, name, layout, seed, layer, scale, n_features)

    def siblings(self, name: str, X: np.ndarray, seed: int, layer: int) -> list:
        """[(file suffix, array)] written next to <stem>_activations.npy."""
        if not self.mean_pooled:
            return []
        return [("mean_activations", mean_pooled(X, seed, layer, STREAMS[name]))]


def _layout(kind: str, seed: int, layer: int, n_features: int) -> dict:
    """{"train" | OOD dataset: [blocks]} for one truth; ValueError when n_features is too small."""
    rng = demo._rng(seed, layer, STREAM0)
    train_active, ood_active = demo.LAYER_ACTIVE.get(layer, demo.LAYER_ACTIVE[demo.DEFAULT_LAYER])
    width = n_features / demo.REF_FEATURES
    perm, pos = rng.permutation(n_features), 0

    def take(k):
        """The next k features of the seeded permutation."""
        nonlocal pos
        if pos + k > n_features:
            raise ValueError(f"n_features={n_features} too small for the feature layout")
        pos += k
        return perm[pos - k:pos]

    def size(spec):
        """A block's feature count at this width."""
        return demo._n_feats(spec[0], n_features, spec[1])

    n_train_bg = max(8, round(BG_SHARE[0] * train_active * width / demo.POOL_MEAN_P))
    n_ood_bg = max(8, round(BG_SHARE[1] * ood_active * width / demo.POOL_MEAN_P))
    n_overlap = int(round(demo.OVERLAP_FRAC * n_ood_bg))
    train_bg = take(n_train_bg)
    ood_only = take(n_ood_bg - n_overlap)
    intent = take(size(INTENT))
    bg = {"verbosity": (1.0, 0.0, 0.0), "gain": (0.0, 1.0, 0.0)}

    def sig(feats, latent, p0, magnitude, logit_c=1.0, mag_c=0.15):
        """A signal block loaded on one latent (and the row gain)."""
        return demo._block(rng, feats, p0, magnitude,
                           {latent: (logit_c, mag_c, 0.5), "gain": (0.0, 1.0, 0.0)})

    train = [demo._block(rng, train_bg, demo.POOL_MEAN_P, demo.TRAIN_MAGNITUDE, bg,
                         kappa=demo.POOL_KAPPA),
             sig(intent, "intent", 0.15, demo.TRAIN_MAGNITUDE)]
    if kind == "scale":
        train.append(demo._block(rng, ood_only, FAINT_P, FAINT_MAGNITUDE, bg))
    elif kind == "spurious":
        train.append(sig(take(size(SPURIOUS)), "cue", CUE_P, demo.TRAIN_MAGNITUDE, *CUE_LOADS))
    ood_intent = take(size(INTENT)) if kind == "data" else intent
    ood = [demo._block(rng, np.concatenate([train_bg[:n_overlap], ood_only]), demo.POOL_MEAN_P,
                       demo.OOD_MAGNITUDE, bg, kappa=demo.POOL_KAPPA),
           sig(ood_intent, "intent", 0.05, demo.OOD_MAGNITUDE)]
    bench = ood + [sig(take(size(INTENT)), "honest", 0.05, demo.OOD_MAGNITUDE)]
    bench += [sig(take(size(BENCH_AUX[k])), k, 0.05, demo.OOD_MAGNITUDE, 1.2, 0.10)
              for k in BENCH_AUX]
    return {"train": train, "sycophant": ood, "model_organism": ood, "benchmark": bench}


def _dataset(kind, name, layout, seed, layer, scale, n_features):
    """(X, fine labels) of one dataset of a truth-known cache."""
    rng = demo._rng(seed, layer, STREAM0 + STREAMS[name])
    if name in ("train", "gold"):
        counts = demo.TRAIN_COUNTS if name == "train" else demo.GOLD_COUNTS
        labels = demo._shuffled_labels(rng, demo._counts(counts, scale))
        y = np.array([lab == demo.AF for lab in labels], dtype=float)
        lat = demo._base_latents(rng, len(y))
        lat["verbosity"] += demo.AF_VERBOSITY * y
        lat["gain"] += demo.AF_GAIN * y
        harder = 0.5 if name == "gold" else 0.0
        if kind == "spurious":
            nuisance = SPUR_NUISANCE * rng.standard_normal(len(y))
            lat["intent"] = demo._latent(rng, y, D_SPUR_INTENT) + nuisance
            lat["cue"] = demo._latent(rng, y, D_SPUR_CUE - harder) + nuisance
        else:
            lat["intent"] = demo._latent(rng, y, D_TRAIN[kind] - harder)
        return demo._sample(rng, len(y), n_features, layout["train"], lat), labels
    if name == "benchmark":
        labels = demo._shuffled_labels(rng, demo._counts(demo.BENCHMARK_COUNTS, scale))
    else:
        full = demo.SYCOPHANT_COUNT if name == "sycophant" else demo.ORGANISM_COUNT
        labels = [demo.AF] * max(demo.MIN_CLASS_COUNT, int(round(full * scale)))
    y = np.array([lab == demo.AF for lab in labels], dtype=float)
    lat = demo._base_latents(rng, len(y))
    lat["intent"] = demo._latent(rng, y, D_OOD[name])
    lat["honest"] = demo._latent(rng, 1 - y, D_OOD[name])
    member = np.array([BENCH_CLASS_BLOCKS.get(lab, (0.0,) * len(BENCH_AUX)) for lab in labels])
    for j, key in enumerate(BENCH_AUX):
        lat[key] = demo._latent(rng, member[:, j], demo.D_BENCH_AUX)
    return demo._sample(rng, len(y), n_features, layout[name], lat), labels


def mean_pooled(X: np.ndarray, seed: int, layer: int, stream: int) -> np.ndarray:
    """A mean-pooled sibling of max-pooled X: <= X entry-wise, zero where X is zero."""
    rng = demo._rng(seed, layer, STREAM0 + 10 + stream)
    n, p = X.shape
    row = MEAN_DILUTION[0] + MEAN_DILUTION[1] * rng.standard_normal((n, 1))
    out = np.empty_like(X)
    for r0 in range(0, n, demo.CHUNK_ROWS):
        r1 = min(n, r0 + demo.CHUNK_ROWS)
        entry = np.abs(MEAN_ENTRY_SD * rng.standard_normal((r1 - r0, p)))
        out[r0:r1] = X[r0:r1] * np.exp(-row[r0:r1] - entry).astype(np.float32)
    return out
