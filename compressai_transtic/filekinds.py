"""What is at a path, in words, for the messages that refuse it, and the one bounded
read of a regular file.

Every command that reads a file refuses a folder, a FIFO, a socket or a device in
its place (a FIFO would block the read). The refusals say which of these it is, in
one wording: ``<path>: a FIFO (named pipe), not a regular file``.
:func:`read_regular_file` reads a file whole under a size limit, never blocking on
a FIFO and never reading past the limit, and says in the same words why it did not
(:class:`FileReadError`). Commands that write files refuse an output that is one of
their inputs by :func:`file_identity`.
"""

from __future__ import annotations

import os
import stat
from typing import Any, BinaryIO, Iterable, Optional, Tuple, Union

from .strenum import StrEnum

__all__ = [
    "FileReadError",
    "ImageCheck",
    "file_identity",
    "mode_kind",
    "output_problem",
    "read_regular_file",
    "regular_file_problem",
]


class ImageCheck(StrEnum):
    """How thoroughly the commands check their input images before they start
    (``eval --check-images``, ``train --verify-images``)."""

    #: open the file, read its size and let Pillow verify its structure
    HEADER = "header"
    #: decode every image
    FULL = "full"
    #: no check: a bad file stops the run when it is read
    OFF = "off"


#: how much :func:`read_regular_file` reads at a time of a file that grows while read
_STEP = 1 << 20

#: what a path is, by its mode
_KINDS = (
    (stat.S_ISREG, "a file"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)


def mode_kind(mode: int) -> str:
    """``"a file"``, ``"a folder"``, ``"a FIFO (named pipe)"``, ``"a socket"``,
    ``"a device"`` or ``"a special file"``, from an ``st_mode``."""
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def regular_file_problem(path: Union[str, "os.PathLike[str]"]) -> Optional[str]:
    """``None`` when ``path`` is a regular file (links followed); otherwise what is
    there instead (``"a folder, not a regular file"``), ``"no such file"``, or why it
    cannot be looked at."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "no such file"
    except (OSError, ValueError) as exc:  # a link loop, a name too long, a NUL byte, no permission
        return f"cannot be looked at: {getattr(exc, 'strerror', None) or exc}"
    return None if stat.S_ISREG(mode) else f"{mode_kind(mode)}, not a regular file"


def file_identity(path: Union[str, "os.PathLike[str]"]) -> Tuple[int, int]:
    """(device, inode): equal for two names of one file (links, ``./a`` and ``a``).

    Raises:
        OSError: nothing can be looked at there.
    """
    info = os.stat(path)
    return info.st_dev, info.st_ino


def output_problem(
    output: Union[str, "os.PathLike[str]"], inputs: Iterable[Any], force: bool, option: str
) -> Optional[str]:
    """Why a command may not write ``output`` (``None`` when it may), after the path:
    it is one of ``inputs`` (the same file under any name; refused even with
    ``--force``, ``option`` names the option to change), or it exists and ``force`` is
    not given. Inputs that cannot be looked at are left to their readers."""
    if not os.path.exists(output):
        return None
    identity = file_identity(output)
    for path in inputs:
        try:
            same = path is not None and file_identity(path) == identity
        except (OSError, ValueError):
            same = False
        if same:
            return f"is one of the inputs and would be overwritten; choose another {option}"
    return None if force else "exists; pass --force to overwrite it"


class FileReadError(ValueError):
    """Why :func:`read_regular_file` read nothing: ``str(err)`` is the problem only,
    without the path (``"no such file"``, ``"a folder, not a regular file"``,
    ``"cannot be read: Permission denied"``, ``"5000 bytes, more than the 4096 bytes
    allowed"``).

    Attributes:
        size: for a file larger than the limit, its size in bytes (``limit + 1`` when
            it grew past the limit while read: at least that many); ``None`` for every
            other problem, so that a caller can word the size refusal its own way.
    """

    def __init__(self, problem: str, size: Optional[int] = None) -> None:
        super().__init__(problem)
        self.size = size


def read_regular_file(path: Union[str, "os.PathLike[str]"], limit: int) -> bytes:
    """The bytes of the regular file at ``path`` (links followed), at most ``limit``.

    The open does not block on a FIFO put there after it was looked at, and the open
    file is checked again; at most ``min(size, limit) + 1`` bytes are read, so a huge
    file costs no memory and one that grew past the limit is still refused.

    Raises:
        FileReadError: not a regular file, larger than ``limit`` bytes, or unreadable.
    """
    problem = regular_file_problem(path)
    if problem:
        raise FileReadError(problem)
    try:
        # binary on Windows; a FIFO must not block the open
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb") as f:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):  # replaced since it was looked at
                raise FileReadError(f"{mode_kind(status.st_mode)}, not a regular file")
            if status.st_size > limit:
                raise FileReadError(f"{status.st_size} bytes, more than the {limit} bytes allowed", status.st_size)
            data = _read_up_to(f, status.st_size, limit)
    except FileReadError:
        raise
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the name
        raise FileReadError(f"cannot be read: {getattr(err, 'strerror', None) or err}") from None
    if len(data) > limit:
        raise FileReadError(f"at least {len(data)} bytes, more than the {limit} bytes allowed", len(data))
    return data


def _read_up_to(f: BinaryIO, size: int, limit: int) -> bytes:
    """What is left in ``f`` (``size`` bytes by its status), up to ``limit + 1`` bytes:
    one byte more tells a file that grew past the limit. Reads ``size + 1`` bytes first,
    so that a buffer of ``limit`` bytes is not allocated for a small file, then on in
    steps of at most 1 MiB while the file grows."""
    data = f.read(min(size, limit) + 1)
    if len(data) <= size:
        return data
    chunks, total = [data], len(data)
    while total <= limit:
        chunk = f.read(min(_STEP, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)
