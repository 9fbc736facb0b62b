"""Second reliability round: the tool touches only what it created, never leaves a half-written
or mixed results folder (staging, switch, lock), refuses silent wrong numbers, and every reader
stops with one line on a damaged folder. Each class is parametrized over several cases."""
import errno
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sweeplib import analysis
from sweeplib import base
from sweeplib import data
from sweeplib.data import fingerprint
from sweeplib import execution
from sweeplib import pipeline
from sweeplib import stepfiles
import common
import compare_all_steps
from sweeplib import dashboard
from sweeplib import datacheck
from sweeplib import figures
import generate_report
from sweeplib import owned
from sweeplib import outputs
from sweeplib import results_io
from sweeplib import runner
import run_all
from conftest import FAST_FLAGS, ROOT
from test_reliability import L40, snapshot

DERIVED = ("report.txt", "dashboard.html", "verdict.json")   # figures are off by default


@pytest.fixture
def old_results(tiny_run, tmp_path):
    """A private copy of a complete earlier sweep."""
    dst = tmp_path / "results"
    shutil.copytree(tiny_run, dst)
    return dst


def run(cache, results, *extra):
    """run_all.main on a cache and results folder with the fast flags."""
    return run_all.main(["--cache-dir", str(cache), "--results-dir", str(results)]
                        + FAST_FLAGS + [str(x) for x in extra])


def error_line(err):
    """The one error line of a run that failed after its inputs passed every check (warnings
    about the data may come before it); never a traceback."""
    lines = [x for x in err.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def hidden(folder):
    """Names of the hidden entries of a folder (staging, temp, lock)."""
    return sorted(p.name for p in Path(folder).iterdir()
                  if p.name.startswith(".") and p.name != ".sweep-owned")


def dead_pid():
    """A pid no process has (above any pid_max)."""
    pid = 4_194_304 + 12_345
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    return pid


def fake_owned(base, prefix, pid, **changes):
    """A folder with this tool's marker naming pid (and the given marker changes)."""
    made = owned.make_dir(base, prefix, "test")
    rec = json.loads((made / owned.OWNER).read_text())
    rec.update(pid=pid, proc_start=None, **changes)
    folder = Path(base) / f"{prefix}{pid}-{made.name.rsplit('-', 1)[1]}"
    made.rename(folder)
    (folder / owned.OWNER).write_text(json.dumps(rec))
    return folder


# ---- 1. cleanup touches only what the tool provably created ------------------------------
def test_results_cleanup_keeps_foreign_look_alikes_and_removes_its_own(tiny_cache,
                                                                       old_results):
    pid = dead_pid()
    foreign = [old_results / f".step_0_base.json.{pid}.tmp", old_results / f".report.txt.{pid}.tmp",
               old_results / ".sweep-stage-1-0123456789abcdef"]
    for p in foreign[:2]:
        p.write_text("someone else's")
    foreign[2].mkdir()                                                  # no marker
    foreign.append(fake_owned(old_results, results_io.STAGE_PREFIX, pid, tool="other-tool"))
    foreign.append(fake_owned(old_results, results_io.STAGE_PREFIX, pid, host="other-host"))
    foreign.append(fake_owned(old_results, results_io.STAGE_PREFIX, pid, token="f" * 16))
    alive = fake_owned(old_results, base.TMP_PREFIX, os.getppid())    # a live owner
    ours = [fake_owned(old_results, results_io.STAGE_PREFIX, pid),
            fake_owned(old_results, base.TMP_PREFIX, pid)]
    assert run(tiny_cache, old_results, "--steps", "0") == 0
    for p in foreign + [alive]:
        assert p.exists(), p
    for p in ours:
        assert not p.exists(), p


def test_worker_data_cleanup_keeps_foreign_look_alikes(tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == "/dev/shm"
                        else os.path.exists(path))
    pid = dead_pid()
    foreign = [tmp_path / f"sweep-{pid}-abcdefgh", tmp_path / f"sweep-{pid}-x"]
    for p in foreign:
        p.mkdir()
    foreign.append(fake_owned(tmp_path, "sweep-", pid, host="other-host"))
    foreign.append(fake_owned(tmp_path, "sweep-", pid, tool="other-tool"))
    ours = fake_owned(tmp_path, "sweep-", pid)
    import scipy.sparse as sp
    shared = execution.SharedMatrices([sp.csr_matrix(np.eye(3, dtype=np.float32))])
    assert Path(shared.folder).parent == tmp_path
    assert owned.read_owner(shared.folder, "sweep-")["pid"] == os.getpid()
    shared.close()
    assert all(p.exists() for p in foreign) and not ours.exists()


def test_owner_markers_detect_reused_pids_and_foreign_folders(tmp_path):
    mine = owned.make_dir(tmp_path, ".sweep-tmp-", "test")
    rec = owned.read_owner(mine, ".sweep-tmp-")
    assert rec and owned.alive(rec) is True
    assert owned.alive(dict(rec, proc_start=rec["proc_start"] + 1)) is False    # pid reused
    assert owned.alive(dict(rec, pid=dead_pid())) is False
    assert owned.alive(dict(rec, host="elsewhere")) is None
    (mine / owned.OWNER).write_text("[]")
    assert owned.read_owner(mine, ".sweep-tmp-") is None


# ---- 2. the unit: staged, switched, locked -------------------------------------------------
def _fail_writes(monkeypatch, root, limit, match=""):
    """os.write raises ENOSPC once more than `limit` bytes went to files under root whose path
    contains `match`."""
    real, state = os.write, {"n": 0}

    def write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(str(root)) and match in target:
            if state["n"] + len(data) > limit:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            state["n"] += len(data)
        return real(fd, data)
    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("limit,match,where", [
    (0, "", ".sweep.lock"), (3000, "", "step_0_scores.npz (staged)"),
    (40000, "", "(staged)"), (0, "base.json", "step_0_base.json (staged)"),
    (0, "probe.pkl", "step_0_probe.pkl (staged)")])
def test_disk_full_before_the_switch_keeps_the_old_unit(limit, match, where, tiny_cache,
                                                        old_results, monkeypatch, capsys):
    before = snapshot(old_results)
    _fail_writes(monkeypatch, old_results, limit, match)
    assert run(tiny_cache, old_results, "-C", "1") == 1
    first = error_line(capsys.readouterr().err)
    assert first.startswith(f"error: {old_results}/") and where in first, first
    assert "cannot write (No space left on device); results folder unchanged" in first
    monkeypatch.undo()
    assert snapshot(old_results) == before and hidden(old_results) == []
    analysis.analyze(old_results)


def test_disk_full_after_the_switch_leaves_new_results_and_no_stale_report(
        tiny_cache, old_results, monkeypatch, capsys):
    before = snapshot(old_results)
    _fail_writes(monkeypatch, old_results, 100, "report.txt")
    assert run(tiny_cache, old_results, "-C", "1") == 1
    first = error_line(capsys.readouterr().err)
    assert first.startswith(f"error: {old_results}/report.txt: cannot write (No space left")
    assert "switched in complete" in first and "generate_report.py" in first
    monkeypatch.undo()
    assert not any((old_results / d).exists() for d in DERIVED)
    a = analysis.analyze(old_results)
    assert {r["config"]["C"] for r in a.records.values()} == {1.0}
    assert snapshot(old_results)["step_0_base.json"] != before["step_0_base.json"]


def test_second_writer_is_refused_naming_the_first(tiny_cache, old_results, capsys):
    before = snapshot(old_results)
    held = results_io.FolderLock(old_results).acquire()
    try:
        assert run(tiny_cache, old_results) == 2
    finally:
        held.release()
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"error: {old_results}: in use by another run (pid {os.getpid()} ")
    assert snapshot(old_results) == before


def test_output_path_that_is_a_directory_is_refused_before_fitting(tiny_cache, old_results,
                                                                   capsys):
    (old_results / "step_0_probe.pkl").unlink()
    (old_results / "step_0_probe.pkl").mkdir()
    before = snapshot(old_results)
    assert run(tiny_cache, old_results, "--steps", "0") == 2
    first = error_line(capsys.readouterr().err)
    assert "step_0_probe.pkl: exists and is not a regular file" in first
    assert snapshot(old_results) == before


def test_step_script_refreshes_the_derived_outputs_it_made_stale(tiny_cache, old_results,
                                                                 capsys):
    assert all((old_results / d).exists() for d in DERIVED)
    before = {d: (old_results / d).read_bytes() for d in DERIVED}
    assert runner.main_step(0, ["--cache-dir", str(tiny_cache), "--results-dir",
                                str(old_results)] + FAST_FLAGS) == 0
    err = capsys.readouterr().err
    assert "note: removed" not in err
    assert all((old_results / d).exists() for d in DERIVED)          # written again, not lost
    assert all((old_results / d).read_bytes() != before[d] for d in DERIVED)
    new_run = json.loads((old_results / "step_0_base.json").read_text())["run_id"]
    assert new_run in json.loads((old_results / "verdict.json").read_text())["run_ids"]
    assert analysis.analyze(old_results).steps == [0, 1, 2, 3]
    assert not list(old_results.glob("*.png"))          # figures only where there were some


def test_interrupt_before_the_switch_keeps_the_folder(tiny_cache, old_results, monkeypatch,
                                                      capsys):
    before = snapshot(old_results)

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(execution, "execute", interrupted)
    assert run(tiny_cache, old_results, "-C", "1") == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "interrupted; results folder unchanged"
    assert snapshot(old_results) == before and hidden(old_results) == []


@pytest.mark.slow
def test_interrupt_after_the_switch_says_what_was_kept(tiny_cache, old_results, monkeypatch,
                                                       capsys):
    def interrupted(*a, **k):
        raise results_io.Interrupted(signal.SIGTERM)
    monkeypatch.setattr(outputs, "write_outputs", interrupted)
    assert run(tiny_cache, old_results, "-C", "1") == 143
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("interrupted (SIGTERM); the new results were switched in complete")
    assert not any((old_results / d).exists() for d in DERIVED)
    assert {r["config"]["C"] for r in analysis.analyze(old_results).records.values()} == {1.0}


KILL_SWITCH = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
import run_all
from sweeplib import demo
k, results = int(sys.argv[2]), os.path.abspath(sys.argv[3])
real, n = os.replace, [0]
def replace(src, dst, *a, **kw):
    if os.path.dirname(os.path.abspath(dst)) == results and ".sweep-stage-" in str(src):
        n[0] += 1
        if n[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **kw)
os.replace = replace
sys.exit(run_all.main(sys.argv[4:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 6, 12])
def test_kill_during_the_switch_is_refused_by_readers_and_completed_by_the_next_writer(
        k, tiny_cache, old_results):
    argv = ["--cache-dir", str(tiny_cache), "--results-dir", str(old_results), "-C", "1"]
    r = subprocess.run([sys.executable, "-c", KILL_SWITCH, str(ROOT), str(k), str(old_results)]
                       + argv + FAST_FLAGS, capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL
    with pytest.raises(base.InputError, match="stopped while switching its results in"):
        analysis.analyze(old_results)
    r = subprocess.run([sys.executable, str(ROOT / "run_all.py"), "--resume"] + argv
                       + FAST_FLAGS, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "completed the switch interrupted" in r.stderr
    assert "Traceback" not in r.stderr and hidden(old_results) == []
    assert {rec["config"]["C"] for rec in analysis.analyze(old_results).records.values()} \
        == {1.0}


KILL_FIRST_MOVE = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
import run_all
real = os.replace
def replace(src, dst, *a, **kw):
    if ".sweep-stage-" in str(src) and ".sweep-stage-" not in str(dst):   # first move in
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **kw)
os.replace = replace
sys.exit(run_all.main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_a_kill_during_a_two_folder_switch_is_completed_in_both_folders(tiny_cache,
                                                                        old_results):
    """The main sweep and its budget arm are switched in as one: every folder's journal is
    written before the first move, so the next run completes both (before: only the first,
    the other's staged results were dropped as stale)."""
    argv = ["--cache-dir", str(tiny_cache), "--results-dir", str(old_results), "-C", "1",
            "--budget", "base"] + FAST_FLAGS
    r = subprocess.run([sys.executable, "-c", KILL_FIRST_MOVE, str(ROOT)] + argv,
                       capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    notes = results_io.recover(old_results)
    assert len(notes) == 2 and all("completed the switch interrupted" in n for n in notes)
    main = analysis.analyze(old_results)
    arm = analysis.analyze_folder(old_results / "arm_budget", conclude=False)
    assert {r["config"]["C"] for r in main.records.values()} == {1.0}
    assert {r["config"]["C"] for r in arm.records.values()} == {1.0}   # the new arm
    assert set(main.arms) == {"arm_budget"}


def _wait_for(condition, what, timeout=120):
    """Poll until condition() is true (never a fixed sleep for timing)."""
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


def _threads(pid):
    """Threads of a process (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("Threads:")))


def _children(pid):
    """Pids whose parent is pid."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, ValueError, IndexError):
                continue
    return out


def _running(pid):
    """True while pid exists and is not a zombie."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def medium_cache(tmp_path_factory):
    """A cache whose fits take a few seconds (time to interrupt them)."""
    from sweeplib import demo
    root = tmp_path_factory.mktemp("medium")
    demo.generate(root, verbose=False, scale=0.3, n_features=2048, seed=0)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("sig,code,text", [
    (signal.SIGINT, 130, "interrupted; results folder unchanged"),
    (signal.SIGTERM, 143, "interrupted (SIGTERM); results folder unchanged")])
@pytest.mark.parametrize("mode", ["l1 worker processes", "lockstep solver threads"])
def test_signals_stop_workers_and_keep_the_folder(sig, code, text, mode, medium_cache,
                                                  old_results):
    """L1 fits run in joblib worker processes (mapping files under /dev/shm); L2 fits run in
    this process's solver threads (with --figures, the figures are drawn at the end). An
    interrupt must stop every one of them and leave the folder as it was."""
    before = snapshot(old_results)
    extra = ["--penalty", "l1"] if mode.startswith("l1") else ["--figures"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_all.py"), "--cache-dir",
                             str(medium_cache), "--results-dir", str(old_results), "--jobs", "2",
                             "--quiet"] + extra,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")
    if mode.startswith("l1"):
        _wait_for(lambda: list(shm.glob(f"sweep-{proc.pid}-*")) or proc.poll() is not None,
                  "the fit batch to start")
    else:                                   # 24 fits, each solved in a thread of its own
        _wait_for(lambda: _threads(proc.pid) >= 20 or proc.poll() is not None,
                  "the solver threads to start")
    assert proc.poll() is None, proc.stderr.read()
    workers = _children(proc.pid)
    assert workers or not mode.startswith("l1")
    proc.send_signal(sig)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == text and "Traceback" not in err
    _wait_for(lambda: not any(_running(w) for w in workers), "the workers to stop", 30)
    assert snapshot(old_results) == before and hidden(old_results) == []
    assert not list(shm.glob(f"sweep-{proc.pid}-*"))


@pytest.mark.slow
def test_concurrent_writer_is_refused_while_the_first_runs(medium_cache, old_results):
    cmd = [sys.executable, str(ROOT / "run_all.py"), "--cache-dir", str(medium_cache),
           "--results-dir", str(old_results), "--quiet", "--jobs", "1"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (old_results / results_io.LOCK_NAME).exists() or first.poll() is not None,
              "the first run's lock")
    second = subprocess.run(cmd, capture_output=True, text=True)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert second.returncode == 2
    assert second.stderr.startswith(f"error: {old_results}: in use by another run (pid "
                                    f"{first.pid} ")
    assert analysis.analyze(old_results).steps == [0, 1, 2, 3]


# ---- 3. silent wrong results ---------------------------------------------------------------
def _relabel(cache, value):
    y = np.load(cache / L40 / "test_labels.npy")
    np.save(cache / L40 / "test_labels.npy", np.full_like(y, value))


@pytest.mark.parametrize("value,only", [pytest.param(1, "AF", marks=pytest.mark.slow),
                                        (0, "not AF")])
def test_gold_with_one_class_runs_and_every_reader_works(value, only, cache_copy, tmp_path,
                                                         capsys):
    _relabel(cache_copy, value)
    out = tmp_path / "r"
    assert run(cache_copy, out, "--steps", "0", "3") == 0
    warning = f"all 20 samples of gold_106 are {only} (one class)"
    assert warning in capsys.readouterr().err
    for k in (0, 3):
        rec = json.loads(next(out.glob(f"step_{k}_*.json")).read_text())
        gold = rec["evaluation"]["gold_106"]
        assert gold["auroc"] is None and gold["auroc_note"].startswith("undefined")
        assert any(warning in w for w in rec["data_warnings"])
    assert "DATA WARNINGS" in (out / "report.txt").read_text()
    for fmt in ("md", "csv", "html"):
        assert generate_report.main(["--results-dir", str(out), "--format", fmt,
                                     "--no-figures"]) == 0
    assert compare_all_steps.main(["--results-dir", str(out)]) == 0
    assert figures.main(["--results-dir", str(out), "--quiet"]) == 0


def test_rows_without_active_features_are_warned_recorded_and_reported(cache_copy, tmp_path,
                                                                       capsys):
    x = np.load(cache_copy / L40 / "benchmark_activations.npy")
    x[:4] = 0
    np.save(cache_copy / L40 / "benchmark_activations.npy", x)
    out = tmp_path / "r"
    assert run(cache_copy, out, "--steps", "0", "3") == 0
    line = f"benchmark_activations.npy: 4 of {len(x)} rows"
    assert line in capsys.readouterr().err                         # also under --quiet
    rec = json.loads((out / "step_3_add_benchmark.json").read_text())
    assert any(line in w for w in rec["data_warnings"])
    header = "".join((out / "report.txt").read_text().split("Training progression")[0].split())
    assert "DATAWARNINGS" in header and "".join(line.split()) in header    # (wrapped lines)


def test_fit_with_non_finite_values_is_refused():
    step = common.STEPS[0]
    scores = {"_coef": {"coef": np.array([1.0, np.nan])}, "_oof": {"score": np.zeros(3)},
              "gold_106": {"score": np.zeros(3)}}
    with pytest.raises(base.InputError, match="non-finite weights"):
        datacheck.check_fit("", step, scores)
    scores["_coef"]["coef"] = np.zeros(2)
    warnings = datacheck.check_fit("", step, scores)
    assert any("every weight of the probe is zero" in w for w in warnings)
    assert any("every sample of gold_106 gets the same score" in w for w in warnings)


def test_quiet_still_prints_warnings(tiny_cache, tmp_path, capsys):
    assert run(tiny_cache, tmp_path / "r", "--steps", "0") == 0
    out, err = capsys.readouterr()
    assert out.startswith("ANSWER: ") and "warning:" not in out      # --quiet: just the answer
    assert "warning: leakage audit:" in err


def test_fingerprint_covers_the_whole_file(tmp_path):
    p = tmp_path / "big.npy"
    data = bytearray(os.urandom(6 << 20))
    p.write_bytes(bytes(data))
    st = p.stat()
    before = fingerprint(p)
    data[3 << 20] ^= 1                                 # the middle of a 6 MiB file
    p.write_bytes(bytes(data))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = fingerprint(p)
    assert before["bytes"] == after["bytes"] and before["sha256"] != after["sha256"]
    assert after["sha256"] == hashlib.sha256(bytes(data)).hexdigest()


@pytest.mark.slow
def test_resume_reruns_steps_whose_input_changed_in_the_middle(cache_copy, tmp_path, capsys):
    out = tmp_path / "r"
    assert run(cache_copy, out, "--steps", "0") == 0
    first = (out / "step_0_base.json").read_bytes()
    p = cache_copy / L40 / "train_activations.npy"
    st, x = p.stat(), np.load(p)
    x[len(x) // 2, np.flatnonzero(x[len(x) // 2])[0]] += 1.0
    np.save(p, x)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert run(cache_copy, out, "--steps", "0", "--resume") == 0
    assert (out / "step_0_base.json").read_bytes() != first


@pytest.mark.slow
def test_extra_eval_names_cannot_reach_internal_keys(cache_copy, tmp_path):
    for name in ("a__b", "oof"):
        shutil.copy(cache_copy / L40 / "benchmark_activations.npy",
                    cache_copy / L40 / f"{name}_activations.npy")
        shutil.copy(cache_copy / L40 / "benchmark_labels.json",
                    cache_copy / L40 / f"{name}_labels.json")
    out = tmp_path / "r"
    assert run(cache_copy, out, "--steps", "0", "--extra-eval", "a__b", "oof") == 0
    rec = json.loads((out / "step_0_base.json").read_text())
    scores = stepfiles.load_scores(out / "step_0_scores.npz", rec["run_id"])
    assert {"a__b", "oof", "_oof", "_coef"} <= set(scores)
    assert len(scores["_oof"]["score"]) == rec["n_training_samples"]
    assert np.array_equal(scores["a__b"]["score"], scores["benchmark"]["score"]) is False
    assert set(analysis.analyze(out).sets) >= {"a__b", "oof"}


# ---- 4. readers on damaged folders ----------------------------------------------------------
def _npz_edit(path, fn):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    fn(arrays)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path.write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def _json_edit(path, fn):
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def d_truncated_npz(r):
    p = r / "step_1_scores.npz"
    p.write_bytes(p.read_bytes()[:500])
    return "step_1_scores.npz: sha256"


def d_truncated_npz_unhashed(r):
    _json_edit(r / "step_1_add_sycophant.json", lambda d: d["files"].pop("scores_sha256"))
    p = r / "step_1_scores.npz"
    p.write_bytes(p.read_bytes()[:500])
    return "step_1_scores.npz: unreadable scores file"


def d_json_list(r):
    (r / "step_2_add_organisms.json").write_text("[1, 2]")
    return "step_2_add_organisms.json: not a step record (a JSON list)"


def d_json_lacks_key(r):
    _json_edit(r / "step_2_add_organisms.json", lambda d: d.pop("evaluation"))
    return "step_2_add_organisms.json: not a valid step record (lacks 'evaluation')"


def d_json_wrong_type(r):
    _json_edit(r / "step_2_add_organisms.json", lambda d: d["config"].update(seed="42"))
    return "step_2_add_organisms.json: 'config.seed' has the wrong type"


def _swap(path, make):
    """Replace a file by another kind of thing of the same name (make: Path.mkdir, os.mkfifo)."""
    path.unlink()
    make(path)


def d_json_is_dir(r):
    _swap(r / "step_0_base.json", Path.mkdir)
    return "step_0_base.json: step record is a directory"


def d_json_fifo(r):
    _swap(r / "step_0_base.json", os.mkfifo)
    return "step_0_base.json: step record is a FIFO"


def d_npz_is_dir(r):
    _swap(r / "step_3_scores.npz", Path.mkdir)
    return "step_3_scores.npz: scores file is a directory"


def d_npz_missing(r):
    (r / "step_3_scores.npz").unlink()
    return "step_3_scores.npz: missing"


def d_json_truncated(r):
    p = r / "step_0_base.json"
    p.write_bytes(p.read_bytes()[:200])
    return "step_0_base.json: not valid JSON"


def d_hand_edited_metric(r):
    _json_edit(r / "step_3_add_benchmark.json",
               lambda d: d["evaluation"]["benchmark"].update(auroc=0.999))
    return "step_3_add_benchmark.json: evaluation.benchmark.auroc does not match"


def d_hand_edited_threshold(r):
    _json_edit(r / "step_1_add_sycophant.json",
               lambda d: d["thresholds"]["log_odds"].update({"5": 0.0}))
    return "step_1_add_sycophant.json: thresholds.log_odds.5 does not match"


def d_negated_scores(r):
    _npz_edit(r / "step_3_scores.npz", lambda a: a.update(benchmark__score=-a["benchmark__score"]))
    return "step_3_scores.npz: sha256"


def d_negated_scores_rehashed(r):
    digest = _npz_edit(r / "step_3_scores.npz",
                       lambda a: a.update(benchmark__score=-a["benchmark__score"]))
    _json_edit(r / "step_3_add_benchmark.json",
               lambda d: d["files"].update(scores_sha256=digest))
    return "step_3_add_benchmark.json: evaluation."


def d_scores_of_another_run(r):
    digest = _npz_edit(r / "step_2_scores.npz", lambda a: a.update(run_id=np.array("other")))
    _json_edit(r / "step_2_add_organisms.json", lambda d: d["files"].update(scores_sha256=digest))
    return "step_2_scores.npz: scores belong to run other"


def d_transfer_list(r):
    (r / "transfer_matrix.json").write_text("[]")
    return "transfer_matrix.json: not a valid transfer matrix"


def d_transfer_dir(r):
    (r / "transfer_matrix.json").mkdir()
    return "transfer_matrix.json: transfer matrix is a directory"


def d_grid_lacks_key(r):
    (r / "grid_summary.json").write_text(json.dumps({"cells": [{"layer": 40}]}))
    return "grid_summary.json: not a valid grid summary (lacks 'cells[0].C')"


def d_arm_damaged(r):
    (r / "arm_budget").mkdir()
    shutil.copy(r / "step_0_base.json", r / "arm_budget" / "step_0_base.json")
    (r / "arm_budget" / "step_0_scores.npz").write_bytes(b"PK\x03\x04garbage")
    return "arm_budget/step_0_scores.npz: sha256"


def d_two_records_for_a_step(r):
    _json_edit(r / "step_0_base.json", lambda d: None)
    rec = json.loads((r / "step_1_add_sycophant.json").read_text())
    rec["name"] = "add_benchmark"
    (r / "step_1_add_benchmark.json").write_text(json.dumps(rec))
    from sweeplib import owned                    # as if the tool had written it there
    owned.write_mark(r, "step_1_add_benchmark.json",
                     owned.file_sha256(r / "step_1_add_benchmark.json"))
    return "two step records for step 1"


def d_results_is_a_file(r):
    shutil.rmtree(r)
    r.write_text("x")
    return f"{r.name}: not a folder"


def d_pending_switch(r):
    stage = fake_owned(r, results_io.STAGE_PREFIX, dead_pid())
    (stage / "new").mkdir()
    (stage / owned.JOURNAL).write_text(json.dumps({"moves": [], "remove": []}))
    return "stopped while switching its results in"


DAMAGES = [(f.__name__[2:], f) for f in (
    d_truncated_npz, d_truncated_npz_unhashed, d_json_list, d_json_lacks_key, d_json_wrong_type,
    d_json_is_dir, d_json_fifo, d_npz_is_dir, d_npz_missing, d_json_truncated,
    d_hand_edited_metric, d_hand_edited_threshold, d_negated_scores, d_negated_scores_rehashed,
    d_scores_of_another_run, d_transfer_list, d_transfer_dir, d_grid_lacks_key, d_arm_damaged,
    d_two_records_for_a_step, d_results_is_a_file, d_pending_switch)]
READERS = {
    "compare": lambda r: compare_all_steps.main(["--results-dir", str(r)]),
    "report_txt": lambda r: generate_report.main(["--results-dir", str(r)]),
    "report_md": lambda r: generate_report.main(["--results-dir", str(r), "--format", "md"]),
    "report_csv": lambda r: generate_report.main(["--results-dir", str(r), "--format", "csv"]),
    "report_html": lambda r: generate_report.main(["--results-dir", str(r), "--format", "html"]),
    "dashboard": lambda r: dashboard.main(["--results-dir", str(r)]),
    "figures": lambda r: figures.main(["--results-dir", str(r)]),
}


def _check_reader(reader, damage, old_results, capsys):
    """A reader on a damaged copy: exit 2, the first line names the file and the problem,
    and the folder is left as it was."""
    expected = damage(old_results)
    before = snapshot(old_results) if old_results.is_dir() else None
    signal.alarm(60)                       # a FIFO must never hang a reader
    try:
        rc = READERS[reader](old_results)
    finally:
        signal.alarm(0)
    err = capsys.readouterr().err
    assert rc == 2, err
    first = err.splitlines()[0]
    assert first.startswith("error: ") and expected in first, first
    if before is not None:
        assert snapshot(old_results) == before


@pytest.mark.parametrize("damage", [f for _, f in DAMAGES], ids=[i for i, _ in DAMAGES])
def test_compare_on_a_damaged_folder_exits_2_naming_the_file(damage, old_results, capsys):
    _check_reader("compare", damage, old_results, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("reader", [r for r in READERS if r != "compare"])
@pytest.mark.parametrize("damage", [f for _, f in DAMAGES], ids=[i for i, _ in DAMAGES])
def test_every_reader_on_a_damaged_folder_exits_2_naming_the_file(reader, damage, old_results,
                                                                  capsys):
    _check_reader(reader, damage, old_results, capsys)


@pytest.mark.parametrize("damage,rerun", [
    (d_truncated_npz, 1), pytest.param(d_hand_edited_metric, 3, marks=pytest.mark.slow),
    pytest.param(d_negated_scores_rehashed, 3, marks=pytest.mark.slow),
    pytest.param(d_json_list, 2, marks=pytest.mark.slow)])
def test_resume_reruns_a_damaged_unit_and_leaves_a_readable_folder(damage, rerun, tiny_cache,
                                                                   old_results, capsys):
    damage(old_results)
    assert run(tiny_cache, old_results, "--resume") == 0
    err = capsys.readouterr().err
    assert f"; step {rerun} is rerun" in err
    assert analysis.analyze(old_results).steps == [0, 1, 2, 3]


@pytest.mark.parametrize("damage", [d_transfer_list, d_arm_damaged, d_json_is_dir,
                                    d_two_records_for_a_step])
def test_writer_refuses_before_writing_when_the_folder_would_stay_unreadable(
        damage, tiny_cache, old_results, capsys):
    expected = damage(old_results)
    before = snapshot(old_results)
    assert run(tiny_cache, old_results, "--resume") == 2
    assert expected.split(":")[0] in error_line(capsys.readouterr().err)
    assert snapshot(old_results) == before


@pytest.mark.parametrize("name,content,why", [
    ("step_9_zzz.json", "copy", "not a step file of this tool (it has no step 9)"),
    ("step_3_copy.json", "copy", "its record is step 3 (add_benchmark), not the file's name"),
    ("step_77_notes.json", '{"note": 1}', "not a step file of this tool (it has no step 77)")])
def test_stray_files_are_not_shown_as_steps(name, content, why, old_results, capsys):
    p = old_results / name
    if content == "copy":
        shutil.copy(old_results / "step_3_add_benchmark.json", p)
    else:
        p.write_text(content)
    a = analysis.analyze(old_results)
    assert a.steps == [0, 1, 2, 3]
    assert f"warning: {p}: {why}; ignored" in capsys.readouterr().err
    assert [c for c, _ in dashboard.find_cells(old_results)] == ["."]


# ---- 5. flags: every out-of-range value stops before numpy / scikit-learn -------------------
@pytest.mark.parametrize("argv,expected", [
    (["--jobs", "0"], "argument --jobs: must be -1 (all cores) or >= 1, got 0"),
    (["--jobs", "-2"], "argument --jobs: must be >= -1"),
    (["--seed", "-1"], "argument --seed: must be >= 0"),
    (["--seed", str(2 ** 32)], "argument --seed: must be <= 4294967295"),
    (["--seed", "1.5"], "argument --seed: must be an integer"),
    (["-C", "inf"], "argument -C: must be in [1e-06, 1e+06]"),
    (["-C", "nan"], "argument -C: must be > 0"),
    (["-C", "1e-320"], "argument -C: must be in [1e-06, 1e+06]"),
    (["--max-iter", str(10 ** 20)], "argument --max-iter: must be <= 1000000"),
    (["--n-boot", str(10 ** 12)], "argument --n-boot: removed; intervals are no longer"),
    (["--repeats", "5000"], "argument --repeats: must be <= 1000"),
    (["--cv-folds", "1"], "argument --cv-folds: must be >= 2"),
    (["--cv-folds", "1000"], "argument --cv-folds: must be <= 100"),
    (["--eval-fraction", "nan"], "argument --eval-fraction: must be in (0, 1)"),
    (["--results-dir", ""], "argument --results-dir: must not be empty"),
    (["--cache-dir", " "], "argument --cache-dir: must not be empty"),
    (["--feature-ids", ""], "argument --feature-ids: must not be empty"),
    (["--budget", "0"], "argument --budget: must be a sample count >= 1 or 'base'"),
    (["--budget", "1e3"], "argument --budget: must be a sample count >= 1 or 'base'"),
    (["--extra-eval", "_oof"], "argument --extra-eval: '_oof' is not a valid name"),
    (["--extra-eval", "a" * 65], "argument --extra-eval: '" + "a" * 37 + "...' is not a valid"),
    (["--extra-eval", "9lives"], "argument --extra-eval: '9lives' is not a valid name"),
    (["--extra-eval", "a/b"], "argument --extra-eval: 'a/b' is not a valid name"),
    (["--extra-eval", "test"], "argument --extra-eval: 'test' is the file stem of dataset "
                               "gold_106"),
    (["--steps", "7"], "argument --steps: invalid choice"),
])
def test_out_of_range_flags_exit_2_before_any_data_is_read(argv, expected, tiny_cache,
                                                           old_results, capsys):
    before = snapshot(old_results)
    with pytest.raises(SystemExit) as e:
        run_all.main(["--cache-dir", str(tiny_cache), "--results-dir", str(old_results)] + argv)
    assert e.value.code == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first == f"error: {expected}" or first.startswith(f"error: {expected}"), first
    assert snapshot(old_results) == before


@pytest.mark.parametrize("argv,expected", [
    (["--seed", "4294967295", "--repeats", "2"], "--seed: 4294967295 with --repeats 2"),
    (["--extra-eval", "x", "x"], "--extra-eval: x is given twice"),
    (["--dask-scheduler", " "], "--dask-scheduler: empty address"),
])
def test_flag_combinations_exit_2(argv, expected, tiny_cache, old_results, capsys):
    before = snapshot(old_results)
    assert run(tiny_cache, old_results, *argv) == 2
    assert capsys.readouterr().err.splitlines()[0].startswith(f"error: {expected}")
    assert snapshot(old_results) == before


@pytest.mark.parametrize("main,argv,expected", [
    (compare_all_steps.main, ["--results-dir", ""], "argument --results-dir: must not be empty"),
    (generate_report.main, ["--output", ""], "argument --output: must not be empty"),
    (generate_report.main, ["--output", "/"], "argument --output: / is a directory"),
    (generate_report.main, ["--output", "/no/such/dir/r.txt"],
     "argument --output: /no/such/dir does not exist"),
    (dashboard.main, ["--output", "/tmp"], "argument --output: /tmp is a directory"),
    (figures.main, ["--results-dir", " "], "argument --results-dir: must not be empty"),
])
def test_reader_flags_exit_2(main, argv, expected, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[0].startswith(f"error: {expected}")


@pytest.mark.slow
def test_orderings_load_every_source_whatever_the_steps(tiny_cache, tmp_path):
    out = tmp_path / "r"
    assert run(tiny_cache, out, "--steps", "4", "--orderings", "all") == 0
    folders = sorted(p.name for p in (out / "orderings").iterdir())
    assert len(folders) == 6
    assert analysis.analyze(out / "orderings" / folders[0]).steps == [0, 1, 2, 3]


def test_dataset_without_active_features_is_refused_or_warned_with_a_selection(tiny_cache):
    import dataclasses
    import scipy.sparse as sp
    ds = data.load_cache(tiny_cache, 40, ["sycophant"])[0]["sycophant"]
    empty = {"sycophant": dataclasses.replace(ds, X=sp.csr_matrix(ds.X.shape, dtype=np.float32),
                                              warnings=[])}
    with pytest.raises(base.InputError, match="no active feature in any of its"):
        datacheck.check_datasets(empty)
    seen = []
    datacheck.check_datasets(empty, feature_ids=[1, 2], warn=seen.append)
    assert "no row has an active feature among the 2 --feature-ids" in seen[0]
