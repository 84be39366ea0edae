"""`trl_lead.files`: atomic writes with ordinary permissions, and the cache directory."""

from __future__ import annotations

import os
import pathlib
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trl_lead import files
from trl_lead.files import CACHE_ENV_VAR, atomic_directory, atomic_write, cache_dir_path


@pytest.fixture
def umask():
    """Sets the process umask for one test and restores it."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_and_folders_get_ordinary_permissions_under_the_umask(tmp_path, umask):
    for mask, file_mode, folder_mode in ((0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)):
        umask(mask)
        with atomic_write(tmp_path / f"text-{mask:o}.json") as f:
            f.write("{}")
        with atomic_write(tmp_path / f"bytes-{mask:o}.npy", "wb") as f:
            np.save(f, np.arange(3))
        with atomic_directory(tmp_path / f"folder-{mask:o}") as folder:
            (folder / "x").write_text("x")
        assert mode(tmp_path / f"text-{mask:o}.json") == file_mode  # as `open(path, "w")` would make it
        assert mode(tmp_path / f"bytes-{mask:o}.npy") == file_mode
        assert mode(tmp_path / f"folder-{mask:o}") == folder_mode  # as `os.mkdir` would make it
    np.testing.assert_array_equal(np.load(tmp_path / "bytes-22.npy"), np.arange(3))
    assert (tmp_path / "text-22.json").read_text() == "{}"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file or folder left


def test_no_temporary_file_is_left_and_the_target_is_untouched_on_failure(tmp_path, umask):
    target = tmp_path / "sub" / "state.json"
    with atomic_write(target) as f:  # creates the missing folder
        f.write("old")
    assert os.listdir(target.parent) == ["state.json"]
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(target) as f:
            f.write("new and half")
            f.flush()
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert os.listdir(target.parent) == ["state.json"]  # the temporary file went too
    with pytest.raises(KeyboardInterrupt):  # an interrupt too
        with atomic_write(tmp_path / "sub" / "never.npz", "wb") as f:
            f.write(b"PK")
            raise KeyboardInterrupt
    assert os.listdir(target.parent) == ["state.json"]
    (tmp_path / "sub" / "taken").mkdir()  # the rename itself fails: a folder holds the name
    with pytest.raises(IsADirectoryError):
        with atomic_write(tmp_path / "sub" / "taken") as f:
            f.write("x")
    assert sorted(os.listdir(target.parent)) == ["state.json", "taken"]
    with pytest.raises(ValueError, match="mode='a'"):
        with atomic_write(target, "a"):
            pass


def test_the_file_reaches_the_disk_before_it_takes_the_name(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.fstat(fd).st_size)), fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", Path(b).name)), replace(a, b)))
    with atomic_write(tmp_path / "a.txt") as f:
        f.write("12345")  # still in Python's buffer: the fsync must come after a flush
    assert events == [("fsync", 5), ("replace", "a.txt")]


def test_a_kill_while_writing_leaves_the_old_file(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")
    code = (
        "import os, signal, sys\n"
        "from trl_lead.files import atomic_write\n"
        "with atomic_write(sys.argv[1]) as f:\n"
        "    f.write('new and half'); f.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, timeout=60)
    assert result.returncode == -9, result.stderr.decode()
    assert target.read_text() == "old"  # a temporary file may be left beside it; never under the target's name


def test_atomic_directory_replaces_or_keeps_an_existing_folder(tmp_path):
    target = tmp_path / "clustered"
    with atomic_directory(target) as folder:
        (folder / "data").write_text("1")
    with atomic_directory(target) as folder:  # replaces: a rerun's output wins
        (folder / "data").write_text("2")
    assert (target / "data").read_text() == "2"
    with atomic_directory(target, keep_existing=True) as folder:  # keeps: another process's finished cache entry
        (folder / "data").write_text("3")
    assert (target / "data").read_text() == "2"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as folder:
            (folder / "data").write_text("half")
            raise RuntimeError
    assert (target / "data").read_text() == "2"
    assert os.listdir(tmp_path) == ["clustered"]  # no temporary folder left, on success or failure


def test_cache_dir_is_the_argument_then_the_environment_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "env"))
    assert cache_dir_path(tmp_path / "arg") == tmp_path / "arg"
    assert cache_dir_path() == tmp_path / "env"
    monkeypatch.setenv(CACHE_ENV_VAR, "")  # set but empty: the default
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir_path() == tmp_path / "home" / ".cache" / "trl_lead"
    monkeypatch.delenv(CACHE_ENV_VAR)
    assert cache_dir_path("~/x") == tmp_path / "home" / "x"
    assert cache_dir_path() == tmp_path / "home" / ".cache" / "trl_lead"


def test_the_package_has_one_cache_directory_and_imports_no_torch():
    package = pathlib.Path(files.__file__).parent
    assert [p.name for p in package.glob("*.py") if "def cache_dir_path(" in p.read_text()] == ["files.py"]
    code = "import sys, trl_lead.files; assert not {'torch', 'numpy'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_benchmark_rows_keep_their_columns_when_a_row_brings_new_ones(tmp_path):
    from benchmarks.selection import append_row, read_rows

    path = str(tmp_path / "runs.csv")
    append_row(path, {"method": "random", "score": 1})
    append_row(path, {"score": 2, "method": "oracle"})  # another key order: written under the file's header
    append_row(path, {"method": "lead", "share": 0.5, "score": 3})  # a new column: the file is rewritten with it
    append_row(path, {"method": "stratified", "score": 4})
    assert read_rows(path) == [
        {"method": "random", "score": "1", "share": ""},
        {"method": "oracle", "score": "2", "share": ""},
        {"method": "lead", "score": "3", "share": "0.5"},
        {"method": "stratified", "score": "4", "share": ""},
    ]
    assert os.listdir(tmp_path) == ["runs.csv"]  # no temporary file left beside it
