"""Sparse sidecar cache (sidecar.py): written on first load, used only when it is verified to
be the dense file's, rebuilt when stale or corrupt, never required."""
import json
import zipfile

import numpy as np
import pytest

import common
import run_all
from sweeplib import sidecar
from conftest import FAST_FLAGS
from sweeplib import config
from sweeplib import data

LAYER = "layer_40"


def sidecars(folder):
    """Sidecar files in a folder."""
    return sorted(p.name for p in folder.glob(f"*{sidecar.SUFFIX}"))


def clear(cache):
    """Remove sidecars a copied cache brought along (the session's runs wrote some)."""
    for p in (cache / LAYER).glob(f"*{sidecar.SUFFIX}"):
        p.unlink()
    return cache


def run(cache, out, *extra):
    """One quick sweep (step 0: loading is what matters here); exit code."""
    return run_all.main(["--cache-dir", str(cache), "--results-dir", str(out), "--steps", "0",
                         *FAST_FLAGS, *map(str, extra)])


def metrics(out):
    """What a run computed, per step."""
    return {p.name: {k: json.loads(p.read_text())[k]
                     for k in ("evaluation", "cv_auroc_folds", "n_iter", "cv_n_iter")}
            for p in sorted(out.glob("step_*.json"))}


def load(path, store, feature_ids=None):
    """load_activations through a sidecar store."""
    return data.load_activations(path, feature_ids, store)


@pytest.mark.slow
def test_first_run_writes_sidecars_later_runs_use_them_same_numbers(cache_copy, tmp_path):
    clear(cache_copy)
    assert run(cache_copy, tmp_path / "plain", "--no-sidecar") == 0
    assert sidecars(cache_copy / LAYER) == []                      # --no-sidecar writes none
    assert run(cache_copy, tmp_path / "first") == 0
    written = sidecars(cache_copy / LAYER)
    assert len(written) == 5
    stamps = {n: (cache_copy / LAYER / n).stat().st_mtime_ns for n in written}
    assert run(cache_copy, tmp_path / "second") == 0
    assert {n: (cache_copy / LAYER / n).stat().st_mtime_ns for n in written} == stamps
    assert metrics(tmp_path / "plain") == metrics(tmp_path / "first") \
        == metrics(tmp_path / "second")
    dense = sum((cache_copy / LAYER / f"{d.stem}_activations.npy").stat().st_size
                for d in common.DATASETS.values())
    assert sum((cache_copy / LAYER / n).stat().st_size for n in written) < dense


def test_sidecar_equals_the_dense_conversion_also_for_a_feature_subset(tiny_cache, tmp_path):
    path = tiny_cache / LAYER / "train_activations.npy"
    store = sidecar.Store(tmp_path / "sc", note=lambda m: None)
    for ids in (None, [200, 3, 17, 5, 199]):
        ref, ref_neg = data.load_activations(path, ids)
        for _ in range(2):                                 # written, then read back
            X, n_neg = load(path, store, ids)
            assert X.dtype == np.float32 and X.has_sorted_indices and n_neg == ref_neg
            assert (X != ref).nnz == 0 and X.shape == ref.shape
    assert store.stats["hits"] == 3 and store.stats["written"] == 1


def test_stale_sidecar_is_rebuilt_from_the_changed_dense_file(cache_copy, tmp_path):
    path = cache_copy / LAYER / "test_activations.npy"
    notes = []
    store = sidecar.Store(note=notes.append)
    load(path, store)
    arr = np.load(path)
    arr[3, :] = 0.0
    arr[3, 7] = 5.0
    np.save(path, arr)                                      # same size, new content and mtime
    X, _ = load(path, store)
    assert len(notes) == 1 and "stale" in notes[0] and notes[0].startswith("note: ")
    assert "rebuilt" in notes[0]
    assert X[3].nnz == 1 and X[3, 7] == 5.0
    assert load(path, store)[0][3, 7] == 5.0 and len(notes) == 1      # the rebuilt one is fine


def _with_sidecar(cache):
    """(dense path, notes list, store, matrix, sidecar path) after a first load wrote the
    sycophant sidecar."""
    path = cache / LAYER / "sycophant_activations.npy"
    notes = []
    store = sidecar.Store(note=notes.append)
    ref, _ = load(path, store)
    return path, notes, store, ref, store.path_for(path)


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "other_rows"])
def test_corrupt_sidecar_is_refused_and_rebuilt(cache_copy, damage):
    path, notes, store, ref, side = _with_sidecar(cache_copy)
    raw = bytearray(side.read_bytes())
    if damage == "flip":                                    # one bit inside the values
        with zipfile.ZipFile(side) as z:
            info = z.getinfo("data.npy")
        raw[info.header_offset + 200] ^= 0x10
        side.write_bytes(bytes(raw))
    elif damage == "truncate":
        side.write_bytes(bytes(raw[: len(raw) // 2]))
    elif damage == "garbage":
        side.write_bytes(b"not a zip file at all")
    else:                          # consistent file, wrong values, MAC under another key
        fp = data.fingerprint(path)
        with open(side, "wb") as f:
            np.savez(f, **sidecar._arrays(ref[::-1].tocsr(), 0, fp, b"k" * 32))
    X, _ = load(path, store)
    assert len(notes) == 1 and notes[0].startswith(f"note: {side}: "), notes
    assert (X != ref).nnz == 0
    assert load(path, store)[0].nnz == ref.nnz and len(notes) == 1


def test_unwritable_sidecar_folder_is_noted_once_and_the_run_goes_on(cache_copy, tmp_path,
                                                                     capsys):
    clear(cache_copy)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert run(cache_copy, tmp_path / "out", "--sidecar-dir", blocker / "sub") == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "sidecar" in ln]
    assert len(lines) == 1 and lines[0].startswith(f"note: {blocker / 'sub'}: cannot write"), err
    assert sidecars(cache_copy / LAYER) == []


def test_sidecar_dir_keeps_the_cache_folder_untouched(cache_copy, tmp_path):
    clear(cache_copy)
    before = sorted(p.name for p in (cache_copy / LAYER).iterdir())
    assert run(cache_copy, tmp_path / "out", "--sidecar-dir", tmp_path / "sc") == 0
    assert sorted(p.name for p in (cache_copy / LAYER).iterdir()) == before
    assert len(sidecars(tmp_path / "sc")) == 5
    rec = json.loads(next((tmp_path / "out").glob("step_0_*.json")).read_text())
    assert rec["config"]["sidecar"] == str(tmp_path / "sc")
    assert "sidecar" in config.RUN_ONLY_KEYS


def test_non_finite_dense_file_is_an_error_even_with_a_sidecar_folder(cache_copy, tmp_path,
                                                                      capsys):
    path = cache_copy / LAYER / "train_activations.npy"
    arr = np.load(path)
    arr[2, 4] = np.nan
    np.save(path, arr)
    assert run(cache_copy, tmp_path / "out", "--sidecar-dir", tmp_path / "sc") == 2
    assert capsys.readouterr().err.startswith(f"error: {path}: non-finite value nan")
    assert "train" not in " ".join(sidecars(tmp_path / "sc"))


def _npy_with_header(header):
    """A .npy member whose header dict is cut short (numpy's parser: tokenize.TokenError)."""
    magic, h = b"\x93NUMPY\x01\x00", header.encode("latin1")
    h += b" " * (64 - (len(magic) + 3 + len(h)) % 64) + b"\n"
    return magic + len(h).to_bytes(2, "little") + h + b"\0" * 16


def _damage_sidecar(side, kind, ref, fp):
    """Damage a sidecar so that reading it raises something other than the usual errors."""
    if kind == "token_error":                           # header of data.npy cut short
        with zipfile.ZipFile(side) as z:
            members = {n: z.read(n) for n in z.namelist()}
        members["data.npy"] = _npy_with_header("{'descr': '<f4', 'shape': (3,")
        with zipfile.ZipFile(side, "w") as z:
            for name, raw in members.items():
                z.writestr(name, raw)
    elif kind == "compression":                         # NotImplementedError from zipfile
        raw = bytearray(side.read_bytes())
        for sig, off in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
            at = -1
            while (at := raw.find(sig, at + 1)) >= 0:
                raw[at + off:at + off + 2] = (99).to_bytes(2, "little")
        side.write_bytes(bytes(raw))
    elif kind == "meta_not_a_dict":                     # AttributeError on meta.get
        arrays = sidecar._arrays(ref, 0, fp, sidecar.user_key())
        arrays["meta"] = np.array(json.dumps([1, 2]))
        with open(side, "wb") as f:
            np.savez(f, **arrays)
    elif kind == "npy_not_npz":
        with open(side, "wb") as f:
            np.save(f, np.zeros(3))
    elif kind == "empty_zip":
        with zipfile.ZipFile(side, "w"):
            pass


@pytest.mark.parametrize("kind", ["token_error", "compression", "meta_not_a_dict",
                                  "npy_not_npz", "empty_zip"])
def test_any_damage_to_a_sidecar_is_a_note_and_a_rebuild(cache_copy, kind):
    path, notes, store, ref, side = _with_sidecar(cache_copy)
    _damage_sidecar(side, kind, ref, data.fingerprint(path))
    X, _ = load(path, store)
    assert len(notes) == 1 and notes[0].startswith(f"note: {side}: "), notes
    assert notes[0].endswith(f"; rebuilt from {path.name}") and "\n" not in notes[0]
    assert "pickle" not in notes[0]
    assert (X != ref).nnz == 0
    assert load(path, store)[0].nnz == ref.nnz and len(notes) == 1


def test_garbage_sidecar_note_says_what_it_is_not_pickled_data(cache_copy):
    path = cache_copy / LAYER / "test_activations.npy"
    notes = []
    store = sidecar.Store(note=notes.append)
    load(path, store)
    store.path_for(path).write_bytes(b"not a zip file at all")
    load(path, store)
    assert notes == [f"note: {store.path_for(path)}: damaged (not an .npz archive); "
                     f"rebuilt from {path.name}"]


def test_a_fifo_or_directory_at_the_sidecar_path_never_hangs(cache_copy):
    import os
    import signal
    path = clear(cache_copy) / LAYER / "test_activations.npy"
    ref, _ = data.load_activations(path)
    notes = []
    store = sidecar.Store(note=notes.append)
    side = store.path_for(path)
    os.mkfifo(side)

    def hung(signum, frame):
        raise AssertionError(f"{side}: opening the FIFO blocked the load")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)                                  # a FIFO opened for reading would block
    try:
        X, _ = load(path, store)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert (X != ref).nnz == 0 and side.is_file()     # the FIFO was replaced by a sidecar
    assert notes == [f"note: {side}: a FIFO, not a regular file; rebuilt from {path.name}"]
    side.unlink()
    side.mkdir()
    notes.clear()
    X, _ = load(path, store)
    assert (X != ref).nnz == 0 and side.is_dir()
    assert len(notes) == 1 and notes[0].startswith(f"note: {side}: is a directory"), notes


@pytest.mark.parametrize("column", [4, 9])
def test_feature_ids_one_non_finite_rule_with_and_without_sidecars(cache_copy, tmp_path,
                                                                   column):
    """A NaN is refused in any column of the file, also one --feature-ids leaves out (9),
    whether the matrix comes from a sidecar or straight from the dense file."""
    path = clear(cache_copy) / LAYER / "train_activations.npy"
    arr = np.load(path)
    arr[2, column] = np.nan
    np.save(path, arr)
    for store in (None, sidecar.Store(tmp_path / f"sc{column}", note=lambda m: None)):
        with pytest.raises(data.InputError, match=rf"{path}: non-finite value nan at row 2, "
                                                  rf"feature {column}$"):
            data.load_activations(path, [1, 4, 7], store)


def test_feature_ids_same_matrix_and_negative_count_with_and_without_sidecars(cache_copy,
                                                                            tmp_path):
    path = clear(cache_copy) / LAYER / "train_activations.npy"
    arr = np.load(path)
    arr[3, 5], arr[4, 200] = -1.0, -2.0                 # one used column, one left out
    np.save(path, arr)
    plain = data.load_activations(path, [5, 17, 3])
    store = sidecar.Store(tmp_path / "sc", note=lambda m: None)
    for _ in range(2):                                  # written, then read back
        X, n_neg = data.load_activations(path, [5, 17, 3], store)
        assert (X != plain[0]).nnz == 0 and n_neg == plain[1] == 1


def test_each_input_file_is_hashed_once_per_run(tiny_cache, tmp_path, monkeypatch):
    """Each activations file is read whole once per run: converted (hashed while read) when
    no sidecar is there, hashed once for the sidecar's check when one is; label files are
    hashed from the bytes parsed. The recorded fingerprints are the files' whole sha256."""
    from collections import Counter
    from sweeplib import pipeline
    reads, real_fp, real_conv = Counter(), data.fingerprint, data.dense_to_csr

    def counting_fp(path):
        reads[str(path)] += 1
        return real_fp(path)

    def counting_conv(path, shape):
        reads[str(path)] += 1
        return real_conv(path, shape)
    monkeypatch.setattr(data, "fingerprint", counting_fp)
    monkeypatch.setattr(data, "dense_to_csr", counting_conv)
    args = config.build_parser("t").parse_args(["--cache-dir", str(tiny_cache), "--quiet",
                                                "--sidecar-dir", str(tmp_path / "sc")])
    for _ in range(2):                                  # sidecars written, then read
        reads.clear()
        with pipeline.prepare(config.RunConfig.from_args(args), [common.STEPS[3]]) as ctx:
            acts = {p for p in ctx.fingerprints if p.endswith("_activations.npy")}
            assert set(reads) == acts and all(n == 1 for n in reads.values()), reads
            assert {p: real_fp(p) for p in ctx.fingerprints} == ctx.fingerprints


def test_a_crafted_sidecar_never_supplies_the_numbers(cache_copy):
    """Issue 21: a sidecar that keeps the dense file's fingerprint, a consistent structure and
    the first and last rows while moving every other row, signed with any key but the user's,
    is refused; the numbers come from the dense file and the note says why."""
    path, notes, store, ref, side = _with_sidecar(cache_copy)
    n = ref.shape[0]
    order = np.r_[0, np.arange(n - 2, 0, -1), n - 1]            # every middle row moved
    forged = ref[order].tocsr()
    assert (forged != ref).nnz > 0
    fp = data.fingerprint(path)
    for key in (b"\0" * 32, b"guess" * 7):
        with open(side, "wb") as f:
            np.savez(f, **sidecar._arrays(forged, 0, fp, key[:32]))
        notes.clear()
        X, _, got_fp = data.read_activations(path, None, store)
        assert (X != ref).nnz == 0 and got_fp == fp
        assert len(notes) == 1 and "HMAC does not verify" in notes[0], notes


def test_a_sidecar_key_others_can_read_turns_sidecars_off(cache_copy):
    path = clear(cache_copy) / LAYER / "test_activations.npy"
    key = sidecar.key_path()
    sidecar.user_key()
    mode = key.stat().st_mode
    key.chmod(0o644)
    try:
        notes = []
        store = sidecar.Store(note=notes.append)
        X, _ = load(path, store)
        assert (X != data.load_activations(path)[0]).nnz == 0
        assert sidecars(path.parent) == []                  # neither read nor written
        assert len(notes) == 1 and notes[0].startswith(f"note: {key}: sidecar key") \
            and "not private" in notes[0], notes
    finally:
        key.chmod(mode)


def test_the_fingerprint_recorded_is_the_one_of_the_bytes_the_numbers_come_from(cache_copy,
                                                                                monkeypatch):
    """Issue 21: a dense file replaced after its header was read and before the data were:
    with and without a sidecar store, the fingerprint returned is that of the bytes whose
    numbers are returned (never the old numbers with the new file's hash)."""
    from sweeplib import npyio
    path = clear(cache_copy) / LAYER / "test_activations.npy"
    old = np.load(path)
    new = old.copy()
    new[:, 3] += 1.0
    real = npyio.dense_to_csr

    def swapped(p, shape):
        np.save(p, new)                                      # replaced meanwhile
        return real(p, shape)
    monkeypatch.setattr(data, "dense_to_csr", swapped)
    for store in (None, sidecar.Store(note=lambda m: None)):
        X, _, fp = data.read_activations(path, None, store)
        assert fp == data.fingerprint(path)
        assert np.array_equal(X.toarray(), new.astype(np.float32))
        np.save(path, old)
