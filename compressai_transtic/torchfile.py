"""Reading files written by ``torch.save`` safely: the one ``torch.load`` of the package.

Checkpoints, adapters and training checkpoints are all read with
``torch.load(weights_only=True)`` (a file holding arbitrary Python objects is refused,
never executed) through :func:`load_torch_file`, whose errors say what is wrong with
the file: missing, empty, truncated, not written by ``torch.save``, or holding objects
other than tensors and plain containers. Each caller raises its own error type.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Type

import torch

from .filekinds import regular_file_problem

__all__ = ["load_torch_file"]


def _read_head(path: Path, n: int = 8) -> bytes:
    with path.open("rb") as f:
        return f.read(n)


def _explain(path: Path, exc: BaseException) -> str:
    """Why ``torch.load`` failed on ``path``, specifically (empty, truncated, foreign, unsafe)."""
    name = str(path)
    message = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in message:
        # PyTorch words it "Unsupported global: GLOBAL x" or, for modules it blocks
        # outright (os, subprocess, ...), "unsupported GLOBAL x whose module ... is blocked"
        match = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", message)
        if match and "is blocked" in message:
            return (
                f"{name}: refused to load: the file calls {match.group(1)} when unpickled, a function "
                "that runs commands or touches the system; nothing was run. No checkpoint needs this: "
                "do not load the file, delete it."
            )
        if match:
            return (
                f"{name}: refused to load: the file holds Python objects other than "
                f"tensors and plain containers (found {match.group(1)}), which "
                "torch.load(weights_only=True) does not execute. Only if you trust the "
                "file, re-save its weights: sd = torch.load(path, weights_only=False)"
                "['state_dict']; torch.save({'state_dict': sd}, new_path)."
            )
    size = path.stat().st_size
    if size == 0:
        return f"{name}: the file is empty, not a PyTorch checkpoint."
    head = _read_head(path)
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            return (
                f"{name}: the file is truncated or corrupted ({size} bytes; its zip "
                "directory is missing). Download or copy it again."
            )
        return f"{name}: cannot read this PyTorch zip checkpoint: {exc!r}"
    if head.startswith(b"\x80"):
        if isinstance(exc, EOFError):
            return (
                f"{name}: the file is truncated ({size} bytes, ends before the pickled "
                "data does). Download or copy it again."
            )
        return (
            f"{name}: this pickle is not a PyTorch checkpoint that "
            f"torch.load(weights_only=True) can read: {message.splitlines()[0] if message else exc!r}"
        )
    return f"{name}: not a PyTorch checkpoint (the file starts with {head!r}; expected a file written by torch.save)."


def load_torch_file(path: Path, error: Type[Exception], map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; any failure becomes ``error`` with a
    message naming the file and what is wrong with it.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        error: the file cannot be read.
    """
    problem = regular_file_problem(path)
    if problem is not None:
        raise FileNotFoundError(f"{path}: {problem}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # the unpickler raises many types on damaged input: classify them
        raise error(_explain(path, exc)) from exc
