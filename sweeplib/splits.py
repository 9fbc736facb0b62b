"""Splits and training mixes: which rows of each dataset are trained on and which are held out,
and the rows each step trains on.

- A split dataset (common.DATASETS role "split") is split once per seed, stratified by fine
  class, deterministic from the seed and the dataset's name only; "train" datasets are trained
  on whole, "eval" datasets evaluated whole.
- Step k's mix is the training rows of its sources, source by source (each mix contains the
  previous one); the matrix is built only when asked for.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from common import DATASETS
from sweeplib.base import InputError
from sweeplib.data import eval_set_names


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
