"""Reading the cache (data.py, npyio.py): the fingerprint a run records is the one of exactly
the bytes its numbers come from, nothing is memory-mapped, and hostile files give one line
without echoing their contents."""
import hashlib
import json
import os

import numpy as np
import pytest

from sweeplib import data, npyio
from sweeplib.base import InputError

LAYER = "layer_40"


@pytest.mark.parametrize("stem", ["test_labels.npy", "benchmark_labels.json"])
def test_labels_replaced_while_read_pair_the_old_hash_with_the_old_labels(cache_copy, stem,
                                                                          monkeypatch):
    """Issue 21: a label file replaced after it was read and before the labels were parsed:
    the labels and the fingerprint both come from the bytes read (never the new file's hash
    with the old file's numbers)."""
    path = cache_copy / LAYER / stem
    old = path.read_bytes()
    y_old = data.load_labels(path, "x")[0]
    real = data._parse_labels

    def replaced(raw, p, name):
        if p.suffix == ".npy":
            np.save(p, np.ones(len(y_old) + 3, dtype=np.int8))
        else:
            p.write_text(json.dumps({"labels": ["alignment_faking"] * (len(y_old) + 3)}))
        return real(raw, p, name)
    monkeypatch.setattr(data, "_parse_labels", replaced)
    y, _, fp = data.read_labels(path, "x")
    assert np.array_equal(y, y_old)
    assert fp == {"bytes": len(old), "sha256": hashlib.sha256(old).hexdigest()}
    assert path.read_bytes() != old


def test_a_fortran_ordered_file_is_read_without_a_map_same_numbers(cache_copy):
    path = cache_copy / LAYER / "test_activations.npy"
    arr = np.load(path)
    ref, n_neg, fp = data.read_activations(path)
    np.save(path, np.asfortranarray(arr))
    X, n_neg2, fp2 = data.read_activations(path, [5, 1, 9])
    assert np.array_equal(X.toarray(), arr[:, [5, 1, 9]].astype(np.float32))
    X, _, fp2 = data.read_activations(path)
    assert (X != ref).nnz == 0 and n_neg2 == n_neg and X.has_sorted_indices
    assert fp2 == data.fingerprint(path) and fp2 != fp


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("change", ["truncated", "grown"])
def test_a_dense_file_changed_while_read_is_a_clean_error(cache_copy, order, change,
                                                          monkeypatch):
    """Issue 21: a Fortran-ordered file truncated while it was read ended in SIGBUS through a
    memory map; now every dense file is read with plain reads: one line, InputError."""
    path = cache_copy / LAYER / "test_activations.npy"
    np.save(path, np.asarray(np.load(path), order=order))
    shape = npyio.activation_shape(path)
    real = npyio._parse_header

    def changed(f, p, size):
        out = real(f, p, size)
        with open(p, "r+b") as g:
            if change == "truncated":
                g.truncate(size // 2)
            else:
                g.seek(0, os.SEEK_END)
                g.write(b"\0" * 64)
        return out
    monkeypatch.setattr(npyio, "_parse_header", changed)
    with pytest.raises(InputError, match=rf"^{path}: the file changed while it was read "
                                         r"\(.*\); run again$"):
        npyio.dense_to_csr(path, shape)


@pytest.mark.parametrize("target", ["/proc/self/status", "/dev/zero", "/dev/null"])
def test_a_link_to_a_special_file_is_refused_without_echoing_it(cache_copy, target):
    path = cache_copy / LAYER / "test_activations.npy"
    path.unlink()
    path.symlink_to(target)
    with pytest.raises(InputError) as e:
        npyio.activation_shape(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    assert "Name" not in msg and "\\x00" not in msg and "b'" not in msg, msg


def test_duplicate_labels_keys_are_refused(cache_copy):
    """Issue 21: the last "labels" key silently won."""
    path = cache_copy / LAYER / "benchmark_labels.json"
    n = len(data.load_labels(path, "benchmark")[0])
    path.write_text('{"labels": ' + json.dumps(["aligned"] * n) + ', "labels": '
                    + json.dumps(["alignment_faking"] * n) + "}")
    with pytest.raises(InputError, match=rf"^{path}: malformed labels JSON \(the key 'labels' "
                                         r"appears twice in one object"):
        data.load_labels(path, "benchmark")


def test_feature_ids_fingerprint_is_the_one_of_the_bytes_parsed(tiny_cache, tmp_path):
    ids = tmp_path / "ids.json"
    ids.write_text("[3, 1, 2]")
    out, _, _ = data.load_cache(tiny_cache, 40, ["train"], ids)
    fp = data.input_fingerprints(out, ids)
    assert fp[str(ids)] == {"bytes": 9, "sha256": hashlib.sha256(b"[3, 1, 2]").hexdigest()}
    assert out["train"].X.shape[1] == 3
