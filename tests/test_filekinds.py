"""Paths that are not regular files are called what they are, in one wording, and
:func:`read_regular_file` reads a regular file under a limit or says why not.

The oracle is what the test itself made at each path (``mkdir``, ``mkfifo``, a socket
bound there, ``/dev/null``, a file of bytes it wrote), not ``os.stat``'s mode bits.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import types

import pytest

from compressai_transtic import filekinds
from compressai_transtic.filekinds import (
    FileReadError,
    mode_kind,
    output_problem,
    read_regular_file,
    regular_file_problem,
)


def test_a_regular_file_and_a_link_to_one_have_no_problem(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    os.symlink(tmp_path / "a.png", tmp_path / "link.png")
    assert regular_file_problem(tmp_path / "a.png") is None
    assert regular_file_problem(tmp_path / "link.png") is None
    assert mode_kind(os.stat(tmp_path / "a.png").st_mode) == "a file"


def test_missing_paths_and_paths_under_a_file_are_no_such_file(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    assert regular_file_problem(tmp_path / "missing.png") == "no such file"
    assert regular_file_problem(tmp_path / "file" / "below.png") == "no such file"
    os.symlink(tmp_path / "gone", tmp_path / "dangling.png")
    assert regular_file_problem(tmp_path / "dangling.png") == "no such file"


def test_a_folder_is_a_folder(tmp_path):
    assert regular_file_problem(tmp_path) == "a folder, not a regular file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_fifo_is_named_without_opening_it(tmp_path):
    os.mkfifo(tmp_path / "pipe")  # opening it for reading would wait for a writer
    assert regular_file_problem(tmp_path / "pipe") == "a FIFO (named pipe), not a regular file"


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="Unix sockets")
def test_a_socket_is_a_socket(tmp_path):
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "s"))
        assert regular_file_problem(tmp_path / "s") == "a socket, not a regular file"


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="POSIX devices")
def test_a_device_is_a_device():
    assert regular_file_problem("/dev/null") == "a device, not a regular file"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX links")
def test_a_link_loop_says_why_it_cannot_be_looked_at(tmp_path):
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    problem = regular_file_problem(tmp_path / "a")
    assert problem is not None and problem.startswith("cannot be looked at: ")
    assert regular_file_problem("bad\0name").startswith("cannot be looked at: ")


def _read_problem(path, limit):
    """The :class:`FileReadError` that reading ``path`` raises."""
    with pytest.raises(FileReadError) as info:
        read_regular_file(path, limit)
    return info.value


def test_a_file_is_read_whole_up_to_the_limit(tmp_path):
    data = bytes(range(256)) * 4 + b"end"  # 1027 bytes
    (tmp_path / "f").write_bytes(data)
    assert read_regular_file(tmp_path / "f", 4096) == data
    assert read_regular_file(str(tmp_path / "f"), 1027) == data  # exactly at the limit
    (tmp_path / "empty").write_bytes(b"")
    assert read_regular_file(tmp_path / "empty", 0) == b""
    os.symlink(tmp_path / "f", tmp_path / "link")
    assert read_regular_file(tmp_path / "link", 1027) == data


def test_one_byte_over_the_limit_is_refused_with_its_size(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 1028)
    err = _read_problem(tmp_path / "f", 1027)
    assert isinstance(err, ValueError)
    assert str(err) == "1028 bytes, more than the 1027 bytes allowed"
    assert err.size == 1028
    (tmp_path / "g").write_bytes(b"x")
    assert _read_problem(tmp_path / "g", 0).size == 1


def test_a_huge_file_is_refused_by_its_size_without_reading_it(tmp_path):
    with open(tmp_path / "huge", "wb") as f:
        f.truncate(4 << 30)  # sparse: 4 GiB that reading would have to allocate
    err = _read_problem(tmp_path / "huge", 4096)
    assert err.size == 4 << 30
    assert str(err) == f"{4 << 30} bytes, more than the 4096 bytes allowed"


def test_a_file_that_grows_while_read_is_read_on_to_the_limit(tmp_path, monkeypatch):
    data = b"y" * (3 * filekinds._STEP + 10)  # several steps past the size it had when looked at
    (tmp_path / "f").write_bytes(data)
    fstat = os.fstat
    monkeypatch.setattr(os, "fstat", lambda fd: types.SimpleNamespace(st_mode=fstat(fd).st_mode, st_size=5))
    assert read_regular_file(tmp_path / "f", len(data)) == data  # not cut at the 6 bytes first read
    err = _read_problem(tmp_path / "f", 2 * filekinds._STEP)
    assert err.size == 2 * filekinds._STEP + 1  # read to one byte past the limit, no further
    assert str(err) == f"at least {err.size} bytes, more than the {2 * filekinds._STEP} bytes allowed"


def test_a_folder_and_a_missing_path_are_not_read(tmp_path):
    for path, problem in ((tmp_path, "a folder, not a regular file"), (tmp_path / "missing", "no such file")):
        err = _read_problem(path, 4096)
        assert str(err) == problem and err.size is None


def _without_blocking(read):
    """``read()``'s :class:`FileReadError`, failing (not hanging) when it blocks."""
    outcome = []

    def run():
        try:
            read()
        except FileReadError as err:
            outcome.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the read blocked on a FIFO"
    assert len(outcome) == 1
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_fifo_is_refused_without_blocking(tmp_path, monkeypatch):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    err = _without_blocking(lambda: read_regular_file(fifo, 4096))
    assert str(err) == "a FIFO (named pipe), not a regular file" and err.size is None
    # a FIFO put there after the path was looked at: the open must not wait for a writer
    monkeypatch.setattr(filekinds, "regular_file_problem", lambda path: None)
    err = _without_blocking(lambda: read_regular_file(fifo, 4096))
    assert str(err) == "a FIFO (named pipe), not a regular file" and err.size is None


def test_an_unopenable_file_says_why(tmp_path, monkeypatch):
    (tmp_path / "f").write_bytes(b"x")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", refuse)
    err = _read_problem(tmp_path / "f", 4096)
    assert str(err) == "cannot be read: Permission denied" and err.size is None


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="POSIX modes; root reads anything")
def test_a_file_without_read_permission_says_why(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    (tmp_path / "f").chmod(0)
    assert str(_read_problem(tmp_path / "f", 4096)) == "cannot be read: Permission denied"


def test_an_output_may_not_be_an_input_and_needs_force_to_replace_a_file(tmp_path):
    source, other = tmp_path / "in.json", tmp_path / "out.png"
    source.write_text("{}")
    other.write_text("x")
    os.symlink(source, tmp_path / "link.json")
    assert output_problem(tmp_path / "new.png", [source], force=False, option="-o") is None
    for name in (source, tmp_path / "link.json"):  # the same file under any name, even with --force
        assert output_problem(name, [source], force=True, option="-o") == (
            "is one of the inputs and would be overwritten; choose another -o"
        )
    assert output_problem(other, [source, tmp_path / "missing", None], force=False, option="-o") == (
        "exists; pass --force to overwrite it"
    )
    assert output_problem(other, [source], force=True, option="-o") is None
