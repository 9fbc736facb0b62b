"""The results-folder lock (results_io.FolderLock): an entry in its place that is not a file
is named in one line."""
import os

import pytest

from sweeplib import results_io
from sweeplib.base import InputError


@pytest.mark.parametrize("kind, make", [
    ("a directory", lambda p: p.mkdir()),
    ("a symlink", lambda p: p.symlink_to(p.parent / "elsewhere")),
    ("a FIFO", lambda p: os.mkfifo(p)),
])
def test_a_lock_entry_that_is_not_a_file_is_named(tmp_path, kind, make):
    """Issue 21: a directory or symlink gave 'results directory is not writable (Is a
    directory ...)', a FIFO exit 1 '(Invalid argument)'."""
    path = tmp_path / results_io.LOCK_NAME
    make(path)
    with pytest.raises(InputError) as e:
        results_io.FolderLock(tmp_path).acquire()
    assert str(e.value) == (f"{path}: the results-folder lock is {kind}, not a regular file; "
                            "move it away (no run of this tool makes one)")
    assert os.path.lexists(path)


def test_the_lock_is_taken_and_released(tmp_path):
    lock = results_io.FolderLock(tmp_path).acquire()
    assert (tmp_path / results_io.LOCK_NAME).is_file()
    lock.release()
    assert not (tmp_path / results_io.LOCK_NAME).exists()
