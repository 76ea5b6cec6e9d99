"""Hostile input to ``ecl-jax run`` and ``ecl-jax compare`` around the folders they use:
a symbolic link to a run folder, a lock file that names no process, a file where a folder
must be, a ``--set`` without '=', a finished run in a folder that cannot be written. Each
message says what is actually wrong and how to get past it, no bare OS error reaches the
user, and a refused command changes nothing on disk (docs/design.md#run-folders-and-checkpoints)."""

from __future__ import annotations

import errno
import os
import pathlib

import pytest
from cli_harness import _cli, _one_line_error, _snapshot

from ecl_jax import run_folder

RUN = ["run", "tiny.py", "--quiet"]


@pytest.fixture()
def finished(home):
    """``home`` with the finished run ``runs/tiny``."""
    assert _cli(home, *RUN).returncode == 0
    return home


def test_fresh_through_a_link_to_a_run_folder_names_the_link_and_its_target(finished):
    (finished / "link").symlink_to(finished / "runs" / "tiny")
    before = _snapshot(finished)
    res = _cli(finished, *RUN, "--set", "out_dir=.", "--set", "name=link", "--fresh")
    _one_line_error(res, "link is a symbolic link to the run folder", str(finished / "runs" / "tiny"),
                    "never through a link")
    assert "no .ecl_jax_run file" not in res.stderr
    assert _snapshot(finished) == before


@pytest.mark.parametrize("content, needle", [
    ("garbage\n", "holds 'garbage', not the 'pid host start-time' line ecl_jax writes"),
    ("", "is still empty (another process is taking the lock)"),
])
def test_a_fresh_lock_that_names_no_process_says_so(finished, content, needle):
    lock = finished / "runs" / "tiny" / run_folder.LOCK
    lock.write_text(content)
    before = _snapshot(finished)
    res = _cli(finished, *RUN)
    _one_line_error(res, "may be in use", needle, "Retry in a few seconds", "delete the lock file")
    assert "process 0" not in res.stderr
    assert _snapshot(finished) == before
    old = lock.stat().st_mtime - 10
    os.utime(lock, (old, old))  # once 5 s old it is taken over
    assert _cli(finished, *RUN).returncode == 0
    assert not lock.exists()


def test_a_file_where_the_checkpoints_folder_goes(finished):
    ck = finished / "runs" / "tiny" / "checkpoints"
    for p in ck.iterdir():
        p.unlink()
    ck.rmdir()
    ck.write_text("someone's file\n")
    before = _snapshot(finished)
    res = _cli(finished, *RUN)
    _one_line_error(res, "cannot create the folder runs/tiny/checkpoints: a file of that name is in the way",
                    "move that file away")
    assert "Errno" not in res.stderr
    assert _snapshot(finished) == before


@pytest.mark.parametrize("args", [
    ["run", "tiny.py", "--quiet", "--set", "out_dir=notes.txt/sub"],
    ["run", "tiny.py", "--quiet", "--set", "out_dir=notes.txt"],
    ["compare", "runs/tiny", "--out", "notes.txt/cmp"],
])
def test_a_file_on_the_way_to_an_output_folder_is_named(finished, args):
    before = _snapshot(finished)
    res = _cli(finished, *args)
    _one_line_error(res, "notes.txt is a file, not a folder", "choose a folder")
    assert "Errno" not in res.stderr
    assert _snapshot(finished) == before


@pytest.mark.parametrize("item, needle", [
    ("SMOKE", "use the flag --smoke"),
    ("lr", "give lr a value: --set lr=VALUE"),
    ("setps", "did you mean 'steps'?"),
])
def test_a_set_without_equals_says_what_was_meant(home, item, needle):
    before = _snapshot(home)
    res = _cli(home, *RUN, "--set", item)
    _one_line_error(res, f"override {item!r} has no '='", "--set takes key=value", needle)
    assert _snapshot(home) == before


def test_a_finished_run_in_a_folder_that_cannot_be_written_is_shown_without_writing(finished, monkeypatch):
    """The folder is made read-only the way the file system would report it (root ignores
    permission bits, so the writes themselves are made to fail): the lock and every
    atomic write raise EROFS. The finished run's table is printed from its checkpoints."""
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(args[0]) if args else None)

    monkeypatch.setattr(run_folder.RunLock, "acquire", lambda self: read_only(self.path))
    monkeypatch.setattr(run_folder, "atomic_write_bytes", read_only)
    before = _snapshot(finished)
    res = _cli(finished, "run", "tiny.py")
    assert res.returncode == 0, res.stderr
    assert "cannot be written (read-only file system); the run is finished" in res.stderr
    assert "final test accuracy after 20 steps" in res.stdout and "gossip" in res.stdout
    assert "plot: runs/tiny/accuracy.png" in res.stdout.replace(os.sep, "/")
    assert _snapshot(finished) == before
    # not finished (more steps asked): the write error stands, as one line
    res = _cli(finished, *RUN, "--set", "steps=40")
    _one_line_error(res, "the file system is read-only", str(pathlib.Path("runs/tiny/.lock")))
    assert _snapshot(finished) == before
