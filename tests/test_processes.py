"""Processes a run starts and how they end: scripts answer Ctrl-C with one line, a malformed
--dask-scheduler is one line, loky workers do not outlive a killed run."""
import contextlib
import os
import signal
import tempfile
import time
from pathlib import Path

import pytest

import run_all

LINUX = Path("/proc/self/status").exists()


def _alive(pid):
    """True while pid is a process (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


# --------------------------------------------------------------------------------------------
# Scripts: Ctrl-C during the imports; a malformed --dask-scheduler
# --------------------------------------------------------------------------------------------
ROOT = Path(run_all.__file__).resolve().parent
SCRIPTS = ["00_base_probe.py", "01_add_sycophant.py", "02_add_organisms.py",
           "03_add_benchmark.py", "04_ood_only.py", "run_all.py", "compare_all_steps.py",
           "generate_report.py", "demo_data.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_installs_the_interrupt_handler_before_any_other_import(script):
    import ast
    body = ast.parse((ROOT / script).read_text()).body
    body = [n for n in body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
            and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    first = body[0]
    assert isinstance(first, ast.If) and ast.unparse(first.test) == "__name__ == '__main__'"
    assert [ast.unparse(n) for n in first.body] == ["from sweeplib import interrupt",
                                                    "interrupt.install()"]


def _importing_numpy(pid):
    """True once the process has mapped numpy's extension modules (its imports are under
    way, after the script's first line)."""
    try:
        return "numpy" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="reads /proc")
@pytest.mark.parametrize("script", ["run_all.py", "00_base_probe.py", "generate_report.py"])
def test_ctrl_c_during_the_imports_is_one_line_and_exit_130(script, tmp_path):
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, str(ROOT / script), "--results-dir",
                             str(tmp_path / "out"), "--cache-dir", str(tmp_path / "none")],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    end = time.monotonic() + 20
    while not _importing_numpy(proc.pid) and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("interrupted")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("address", ["foo", "tcp://", "tcp://host:notaport", "tcp://host:0",
                                     "host:70000", "tcp://:8786", " "])
def test_a_malformed_dask_scheduler_is_one_line_and_exit_2(tiny_cache, tmp_path, address,
                                                           capsys):
    out = tmp_path / "out"
    assert run_all.main(["--cache-dir", str(tiny_cache), "--results-dir", str(out),
                         "--dask-scheduler", address, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: --dask-scheduler: "), err
    assert not out.exists()


def test_scheduler_addresses_dask_accepts_pass_the_check():
    from sweeplib import config
    for address in ("tcp://10.0.0.5:8786", "host:8786", "tls://[::1]:8786",
                    "tcp://127.0.0.1:41234", "ws://sched.example.org:80"):
        config.check_dask_address(address)


# --------------------------------------------------------------------------------------------
# Local worker processes (loky) of a run killed with SIGKILL
# --------------------------------------------------------------------------------------------
def _children(pid):
    """Pids of the live children of pid."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_the_workers_of_a_run_killed_with_sigkill_exit_soon(tiny_cache, tmp_path):
    """No run can stop its workers when SIGKILLed; they notice their parent is gone and
    exit (they stayed for joblib's 300 s idle timeout plus loky's 30 s exit wait)."""
    import subprocess
    import sys
    from sweeplib import execution
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_all.py"), "--cache-dir",
                             str(tiny_cache), "--results-dir", str(tmp_path / "out"),
                             "--penalty", "l1", "--jobs", "2", "--quiet", "--steps", "0",
                             "--repeats", "3"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end, workers = time.monotonic() + 60, []
    while time.monotonic() < end and proc.poll() is None:
        workers = _children(proc.pid)
        if len(workers) >= 2:
            break
        time.sleep(0.05)
    assert len(workers) >= 2, "no worker processes started"
    time.sleep(1.0)                                       # the fits are under way
    proc.kill()
    proc.wait()
    t0 = time.monotonic()
    while any(_alive(p) for p in workers) and time.monotonic() - t0 < 60:
        time.sleep(0.2)
    left = [p for p in workers if _alive(p)]
    for p in left:                                        # do not leave them to the suite
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    assert not left, f"workers still alive {time.monotonic() - t0:.0f} s after the SIGKILL"
    assert time.monotonic() - t0 < execution.PARENT_POLL + 5


def test_an_interrupt_while_the_worker_data_is_written_leaves_no_folder(monkeypatch, tmp_path):
    import numpy as np
    import scipy.sparse as sp
    from sweeplib import execution
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    mine = lambda: sorted(shm.glob(f"sweep-{os.getpid()}-*"))       # noqa: E731
    before = mine()
    real, calls = np.save, []

    def interrupted_save(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(execution.np, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        execution.SharedMatrices([sp.random(20, 10, density=0.3, format="csr")])
    assert len(calls) == 2 and mine() == before


def test_worker_processes_keep_loky_resource_tracker_warnings_quiet(monkeypatch):
    import subprocess
    import sys
    from sweeplib import execution
    monkeypatch.setenv("PYTHONWARNINGS", "default")
    with execution.short_lived_workers():
        pass
    assert os.environ["PYTHONWARNINGS"] == "default," + execution.TRACKER_FILTER
    with execution.short_lived_workers():           # once only
        pass
    assert os.environ["PYTHONWARNINGS"].count(execution.TRACKER_FILTER) == 1
    code = ("import warnings; warnings.warn('resource_tracker: There appear to be 1 leaked "
            "folder objects to clean up at shutdown'); warnings.warn('another warning')")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stderr
    assert "resource_tracker" not in err and "another warning" in err


def test_an_interrupt_wrapped_by_python_is_still_an_interrupt(capsys):
    from sweeplib import results_io

    def body():
        try:
            raise results_io.Interrupted(signal.SIGTERM)
        except KeyboardInterrupt as e:       # what class creation does to it (__set_name__)
            raise RuntimeError("Error calling __set_name__ on 'x'") from e
    assert results_io.run_cli(body) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("interrupted (SIGTERM);")

    def other():
        raise RuntimeError("a real error")
    with pytest.raises(RuntimeError, match="a real error"):
        results_io.run_cli(other)
