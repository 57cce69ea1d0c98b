"""Atomic file writes: a reader never sees a partially written file.

Every writer goes to a temporary file in the destination folder, is flushed and
fsynced, given the permissions the user's umask asks for, then renamed over the
destination; on any error the temporary file is removed and the destination is left
as it was. A destination that cannot be written raises :class:`OutputError`, whose
message names the file and says what to do, instead of a bare ``OSError``.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, Union

__all__ = [
    "OutputError",
    "UnreadableSaveError",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable_folder",
]

PathLike = Union[str, "os.PathLike[str]"]


class OutputError(OSError):
    """An output file or folder that cannot be written; the message names it."""


def _cannot_write(path: Path, exc: OSError) -> OutputError:
    reason = exc.strerror or str(exc)
    return OutputError(f"cannot write {path}: {reason}; choose another output location or make the folder writable")


def check_writable_folder(folder: PathLike, what: str = "output") -> Path:
    """Check, before any work, that files can be created in ``folder`` (made later where
    missing): by creating and removing a file in it, or in the nearest existing folder
    above it, as permissions alone do not tell (root, read-only mounts, ``/proc``).

    Raises:
        OutputError: the folder, or the nearest existing folder above it, is a file or
            is not writable.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{what} folder {folder}: {probe} is a file, not a folder; choose another location")
    try:
        fd, name = tempfile.mkstemp(prefix=".write-check.", dir=str(probe))
    except OSError as exc:
        raise OutputError(
            f"{what} folder {folder}: {probe} is not writable ({exc.strerror or exc}); "
            "choose another location or make it writable"
        ) from None
    os.close(fd)
    os.unlink(name)
    return folder


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(file)`` on a temporary binary file, then move it to ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    except OSError as exc:
        raise _cannot_write(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would honour the umask
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise _cannot_write(path, exc) from exc
        raise
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically.

    What UTF-8 cannot hold is written as a backslash escape: Python reads a file name
    that is not UTF-8 with lone surrogates (``\udcff`` for the byte 0xff), and such a
    name must not stop a report from being written.
    """
    return atomic_write_bytes(path, text.encode("utf-8", errors="backslashreplace"))


#: the scalar types that ``torch.load(weights_only=True)`` reads (exactly these: not subclasses)
_PLAIN_TYPES = (str, int, float, bool, bytes, type(None))


def _foreign_value(obj: Any, where: str) -> Optional[str]:
    """Where in ``obj`` (dicts, lists and tuples of plain scalars and torch objects) the
    first value of another type is, in words, or ``None``."""
    if type(obj) in _PLAIN_TYPES or type(obj).__module__.split(".")[0] == "torch":
        return None
    if isinstance(obj, dict):
        items: Any = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}"
    return next((found for k, v in items if (found := _foreign_value(v, f"{where}[{k!r}]"))), None)


class UnreadableSaveError(TypeError):
    """An object that ``torch.load(weights_only=True)`` would refuse to read back."""


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically, once the bytes are known to load
    with ``torch.load(weights_only=True)``, as this package reads every file back:
    an object of another type in ``obj`` (an enumeration member for its string, a
    dataclass for its dict) raises :class:`UnreadableSaveError` and nothing is written.
    """
    import torch  # only here: this module, and results/plot/table/trust that use it, import without torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    try:
        torch.load(io.BytesIO(buffer.getbuffer()), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        torch_reason = next((line.strip() for line in str(exc).splitlines() if "Unsupported global" in line), str(exc))
        reason = _foreign_value(obj, "the object") or torch_reason
        raise UnreadableSaveError(
            f"{path} was not written: it would not load with weights_only=True ({reason})"
        ) from None
    return atomic_write(path, lambda f: f.write(buffer.getbuffer()))
