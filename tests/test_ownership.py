"""Only files the tool can prove it wrote are replaced or removed, and no write or delete
follows a symlink out of the results folder (ownership.py, owned.py's marks)."""
import shutil

import pytest

import generate_report
import run_all
from conftest import FAST_FLAGS
from sweeplib import owned

USER_FILES = {"report.txt": b"my notes\n", "verdict.json": b'{"mine": true}\n',
              "dashboard.html": b"<p>my page</p>\n", "sweep.png": b"\x89PNG my figure"}


def snapshot(folder):
    """{relative path: bytes} of every file under folder."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def run(cache, out, *extra):
    """A quick sweep (steps 0 and 3); exit code."""
    return run_all.main(["--cache-dir", str(cache), "--results-dir", str(out), "--steps", "0",
                         "3", *FAST_FLAGS, *map(str, extra)])


@pytest.mark.parametrize("name", list(USER_FILES))
def test_the_users_own_files_under_the_tools_names_are_refused_before_any_work(
        tiny_cache, tmp_path, capsys, name):
    """Issue 21: --results-dir at a folder with the user's report.txt, verdict.json,
    dashboard.html: overwritten; their sweep.png: deleted; exit 0, no message."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_bytes(USER_FILES[name])
    before = snapshot(out)
    assert run(tiny_cache, out) == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first == (f"error: {out / name}: was not written by this tool (it has no ownership "
                     "mark); refusing to replace or remove it (move it away, or use another "
                     "--results-dir)")
    assert snapshot(out) == before


def test_a_report_edited_since_the_tool_wrote_it_is_kept(tiny_run, tiny_cache, tmp_path,
                                                         capsys):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    (out / "report.txt").write_text("my edited report\n")
    assert run(tiny_cache, out) == 2
    assert "report.txt: was changed since this tool wrote it" in capsys.readouterr().err
    assert (out / "report.txt").read_text() == "my edited report\n"
    assert generate_report.main(["--results-dir", str(out), "--no-figures"]) == 2
    assert (out / "report.txt").read_text() == "my edited report\n"
    (out / "report.txt").unlink()
    assert run(tiny_cache, out) == 0 and (out / "report.txt").read_text().strip()


@pytest.mark.parametrize("link", ["arm_budget", "grid", "grid/layer_40"])
def test_no_write_or_delete_follows_a_link_out_of_the_results_folder(tiny_run, tiny_cache,
                                                                     tmp_path, capsys, link):
    """Issue 21: with arm_budget/ a symlink to a folder outside the results, the run wrote
    through it and deleted the user's report.txt, verdict.json, dashboard.html, sweep.png."""
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    outside = tmp_path / "outside"
    outside.mkdir()
    for name, data in USER_FILES.items():
        (outside / name).write_bytes(data)
    (out / link).parent.mkdir(parents=True, exist_ok=True)
    (out / link).symlink_to(outside)
    flags = (["--budget", "base"] if link == "arm_budget"
             else ["--layers", "40", "-C", "0.1", "10"])
    before, mine = snapshot(out), snapshot(outside)
    assert run(tiny_cache, out, *flags) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out / link}: is a symlink (-> {outside}); refusing to "
                          "write through it out of the results folder"), err
    assert snapshot(outside) == mine and snapshot(out) == before


def test_a_symlink_under_a_tool_name_is_refused(tiny_run, tiny_cache, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (out / "report.txt").unlink()
    (out / "report.txt").symlink_to(target)
    assert run(tiny_cache, out) == 2
    assert f"{out / 'report.txt'}: is a symlink" in capsys.readouterr().err
    assert target.read_text() == "keep me" and (out / "report.txt").is_symlink()


def test_a_folder_written_before_marks_is_adopted(tiny_run, tiny_cache, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    shutil.rmtree(out / owned.MARKS)
    assert run(tiny_cache, out, "--steps", "0") == 0    # its step records verify: the tool's
    marks = owned.read_marks(out)
    assert {"step_1_add_sycophant.json", "step_0_base.json", "report.txt"} <= set(marks)
    assert run(tiny_cache, out, "--steps", "0") == 0


def test_every_file_the_tool_writes_carries_its_mark(tiny_run):
    marks = owned.read_marks(tiny_run)
    files = [p for p in tiny_run.iterdir() if p.is_file() and not p.name.startswith(".")]
    assert files and {p.name for p in files} <= set(marks)
    assert all(owned.file_sha256(p) == marks[p.name] for p in files)
