"""Splits and training mixes: which rows of each dataset are trained on and which are held out,
and the rows each step trains on.

- A split dataset (common.DATASETS role "split") is split once per seed, stratified by fine
  class, deterministic from the seed and the dataset's name only; "train" datasets are trained
  on whole, "eval" datasets evaluated whole.
- With --dedup-split, groups of exact-duplicate rows stay on one side of the split
  (grouped_stratified_split).
- Step k's mix is the training rows of its sources, source by source (each mix contains the
  previous one); the matrix is built only when asked for. A fixed-budget arm keeps a
  stratified subset of it (subsample_stratified).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from sweeplib.base import InputError
from sweeplib.data import eval_names
from sweeplib.duplicates import duplicate_groups


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
        role = ds.spec.role
        if role == "train":
            splits[name] = Split(np.arange(n), np.arange(0))
        elif role == "eval":
            splits[name] = Split(np.arange(0), np.arange(n))
        elif dedup:
            groups = duplicate_groups(ds.X)
            rng_seed = split_seed(seed, name)
            tr, ev = grouped_stratified_split(ds.classes, groups, eval_fraction,
                                              seed=rng_seed[0] ^ rng_seed[1])
            splits[name] = Split(np.sort(tr), np.sort(ev))
        else:
            tr, ev = stratified_split(ds.classes, eval_fraction, seed, name)
            splits[name] = Split(tr, ev)
        if role != "train" and len(splits[name].eval) < 2:
            raise InputError(f"{ds.files['activations']}: eval set {name} has "
                             f"{len(splits[name].eval)} sample(s) after the split; need >= 2")
    return splits


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


def mix_labels(datasets, rows):
    """Binary labels of a training mix given as [(dataset name, row indices)]."""
    return np.concatenate([datasets[n].y[idx] for n, idx in rows])


def has_both_classes(y):
    """True when labels hold both AF and not-AF rows: the one test of a trainable mix."""
    return len(np.unique(y)) >= 2


def check_both_classes(step, datasets, rows):
    """InputError naming the first source's labels file when a step's training mix (rows:
    [(dataset name, row indices)]) has one class only."""
    if not has_both_classes(mix_labels(datasets, rows)):
        first = datasets[step.training[0]].files["labels"]
        raise InputError(f"{first}: training mix of step {step.number} "
                         f"({', '.join(step.training)}) has one class only; cannot train a probe")


def check_budget_size(n, step, size):
    """InputError when a fixed budget of n samples exceeds a step's mix of `size` rows."""
    if n > size:
        raise InputError(f"--budget: {n} samples requested, but step {step.number}'s mix "
                         f"has only {size}")


def build_mix(step, datasets, splits):
    """Concatenate the training rows of the step's sources, source by source."""
    parts = training_rows(step, splits)
    check_both_classes(step, datasets, parts)
    y = mix_labels(datasets, parts)
    source = np.concatenate([np.full(len(idx), n) for n, idx in parts]).astype(str)
    classes = np.concatenate([datasets[n].classes[idx] for n, idx in parts])
    return Mix([(datasets[n].X, idx) for n, idx in parts], y, source, classes)


def eval_sets(datasets, splits):
    """(name, Dataset, row indices) of every eval set present."""
    return [(n, datasets[n], splits[n].eval) for n in eval_names(datasets)]


def grouped_stratified_split(strata, groups, eval_fraction=0.2, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train_idx, eval_idx) with whole groups on one side and per-stratum eval share near eval_fraction.

    Groups are visited in a seeded random order, whatever their size (placing large groups
    first would send duplicated rows preferentially to eval); a group goes to eval when that
    lowers the total deviation sum_s |eval_s - eval_fraction * n_s|.  Afterwards every
    stratum touched by >= 2 groups is given >= 1 eval and >= 1 train sample by moving the
    group whose move costs least.  A group spanning several strata counts towards each.
    """
    strata = np.asarray(strata)
    groups = np.asarray(groups)
    if strata.shape != groups.shape or strata.ndim != 1:
        raise ValueError("strata and groups must be 1-D and of equal length")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError("eval_fraction must be in (0, 1)")
    n = strata.size
    if n == 0:
        return np.array([], dtype=np.intp), np.array([], dtype=np.intp)
    _, s_id = np.unique(strata, return_inverse=True)
    _, g_id = np.unique(groups, return_inverse=True)
    s_id, g_id = s_id.reshape(-1), g_id.reshape(-1)
    nS, nG = int(s_id.max()) + 1, int(g_id.max()) + 1
    # comp[g, s] = number of samples of group g in stratum s.
    comp = sp.csr_matrix((np.ones(n), (g_id, s_id)), shape=(nG, nS)).toarray()
    target = eval_fraction * comp.sum(axis=0)

    rng = np.random.default_rng(seed)
    perm = rng.permutation(nG)
    order = perm
    in_eval = np.zeros(nG, dtype=bool)
    cur = np.zeros(nS)
    for gi in order:  # loop over groups (not resamples or pairs)
        c = comp[gi]
        if np.abs(cur + c - target).sum() < np.abs(cur - target).sum():
            in_eval[gi] = True
            cur += c

    _both_sides(comp, in_eval, cur, target, perm)
    mask = in_eval[g_id]
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _both_sides(comp, in_eval, cur, target, perm):
    """Give every stratum touched by >= 2 groups >= 1 eval and >= 1 train sample, moving the
    group whose move costs least (in place: in_eval, cur)."""
    nG = comp.shape[0]
    touching = comp > 0
    n_groups_per_stratum = touching.sum(axis=0)
    for _ in range(3):  # a few passes: a cross-stratum move can disturb another stratum
        changed = False
        for s in np.flatnonzero(n_groups_per_stratum >= 2):
            ev = (comp[:, s] * in_eval).sum()
            tr = (comp[:, s] * ~in_eval).sum()
            if ev > 0 and tr > 0:
                continue
            want_eval = ev == 0
            cand = np.flatnonzero(touching[:, s] & (in_eval != want_eval))
            sign = 1.0 if want_eval else -1.0
            cost = np.abs(cur[None, :] + sign * comp[cand] - target[None, :]).sum(axis=1)
            # Tie-break by the seeded permutation for determinism.
            pri = np.empty(nG, dtype=np.intp)
            pri[perm] = np.arange(nG)
            gi = cand[np.lexsort((pri[cand], cost))[0]]
            in_eval[gi] = want_eval
            cur += sign * comp[gi]
            changed = True
        if not changed:
            break


def subsample_stratified(strata, n, seed):
    """Exactly n rows, each stratum in proportion (largest remainders), seeded; sorted."""
    values, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    quota = counts * n / counts.sum()
    take = np.floor(quota).astype(int)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    rows = [rng.choice(np.flatnonzero(inverse == i), size=k, replace=False)
            for i, k in enumerate(take) if k]
    return np.sort(np.concatenate(rows))


def mix_strata(mix, n_folds=None):
    """source:class labels; strata smaller than n_folds are folded into their source."""
    strata = np.char.add(np.char.add(mix.source, ":"), mix.classes)
    if n_folds:
        values, counts = np.unique(strata, return_counts=True)
        small = values[counts < n_folds]
        if len(small):
            strata = np.where(np.isin(strata, small), mix.source, strata)
    return strata
