"""Memory planning of inference on the CPU.

Blocks run chunk by chunk of windows, so that a block's temporaries stay small
enough for the CPU's caches (:func:`chunk_windows`; GPUs take whole maps). The
tokens of a stage live in two per-thread scratch buffers that are reused from call to
call (:func:`scratch`), because PyTorch does not cache CPU allocations and a fresh
full-resolution token map costs page faults on every call.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Dict, Iterator, List, Tuple

import torch
from torch import Tensor

__all__ = ["CHUNK_TOKENS", "WORKSPACE", "chunk_windows", "release_workspace", "scratch"]

#: tokens (batch x windows x tokens per window) processed at once by a Swin block on
#: the CPU; read at every call, so tests may change it
CHUNK_TOKENS = 2048


def chunk_windows(batch: int, tokens_per_window: int) -> int:
    """Windows per chunk on the CPU: at least one, about :data:`CHUNK_TOKENS` tokens."""
    return max(1, CHUNK_TOKENS // (batch * tokens_per_window))


class _Workspace(threading.local):
    """This thread's scratch buffers: ``(device, dtype) -> [buffer, buffer]``.

    Each buffer grows to the largest token map seen. They never leave a stage (its
    output is always a caller-owned tensor); ``busy`` marks them as lent out, so that
    nested use gets fresh tensors instead.
    """

    def __init__(self) -> None:
        self.buffers: Dict[Tuple[torch.device, torch.dtype], List[Tensor]] = {}
        self.busy = False


WORKSPACE = _Workspace()


def release_workspace() -> None:
    """Free this thread's scratch buffers of the CPU inference path.

    Inference on the CPU keeps two buffers per thread, each the size of the largest
    token map coded so far, so that repeated calls need no fresh memory for them.
    They are rebuilt on the next call.
    """
    WORKSPACE.buffers.clear()


@contextlib.contextmanager
def scratch(like: Tensor, shape: Tuple[int, ...]) -> Iterator[Tuple[Tensor, Tensor]]:
    """Two uninitialised tensors of ``shape`` (``like``'s dtype and device): views of
    this thread's workspace on the CPU, fresh tensors elsewhere (GPU allocators cache
    on their own) and in nested use."""
    if like.device.type != "cpu" or WORKSPACE.busy:
        yield like.new_empty(shape), like.new_empty(shape)
        return
    numel = math.prod(shape)
    key = (like.device, like.dtype)
    buffers = WORKSPACE.buffers.get(key)
    if buffers is None or buffers[0].numel() < numel:
        WORKSPACE.buffers.pop(key, None)  # the old pair goes before the new one comes
        buffers = WORKSPACE.buffers[key] = [like.new_empty(numel), like.new_empty(numel)]
    WORKSPACE.busy = True
    try:
        yield buffers[0][:numel].view(shape), buffers[1][:numel].view(shape)
    finally:
        WORKSPACE.busy = False
