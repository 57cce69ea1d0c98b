"""What is at a path, in words, for the messages that refuse it.

Every command that reads a file refuses a folder, a FIFO, a socket or a device in
its place (a FIFO would block the read). The refusals say which of these it is, in
one wording: ``<path>: a FIFO (named pipe), not a regular file``. Commands that
write files refuse an output that is one of their inputs by :func:`file_identity`.
"""

from __future__ import annotations

import os
import stat
from typing import Optional, Tuple, Union

__all__ = ["file_identity", "mode_kind", "regular_file_problem"]

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
