"""Paths that are not regular files are called what they are, in one wording.

The oracle is what the test itself made at each path (``mkdir``, ``mkfifo``, a socket
bound there, ``/dev/null``), not ``os.stat``'s mode bits.
"""

from __future__ import annotations

import os
import socket
import sys

import pytest

from compressai_transtic.filekinds import mode_kind, regular_file_problem


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
