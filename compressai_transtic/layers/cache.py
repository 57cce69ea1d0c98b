"""The caches of the layers: a small least-recently-used map, and keys for values
derived from parameters.

One instance holds the window indices (:mod:`.geometry`, per map size), and each
Swin block has one for its attention biases (per map size and prompt layout). Both
are rebuilt on a miss, so an evicted entry only costs time. The cache takes a lock
because several threads may run the same layer at once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Dict, Generic, Hashable, Iterable, Optional, Tuple, TypeVar

from torch import Tensor

V = TypeVar("V")

__all__ = ["LRUCache", "tensors_key"]


def tensors_key(tensors: Iterable[Optional[Tensor]]) -> Tuple[Hashable, ...]:
    """A key for values derived from ``tensors`` that changes whenever one of them is
    changed in place (its version counter) or replaced (its storage address, dtype or
    device)."""
    return tuple(None if t is None else (t._version, t.data_ptr(), t.dtype, t.device) for t in tensors)


class LRUCache(Generic[V]):
    """At most ``size`` entries; the least recently used one goes first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Optional[V]:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def get_or_build(self, key: Hashable, build: Callable[[], V]) -> V:
        """The cached value of ``key``, built (outside the lock) and stored on a miss."""
        value = self.get(key)
        if value is None:
            value = build()
            self.put(key, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __getstate__(self) -> Dict[str, Any]:
        # copies of a module (deepcopy, pickling) start with an empty cache and their
        # own lock (a lock cannot be copied)
        return {"size": self.size}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.size = state["size"]
        self._entries = OrderedDict()
        self._lock = threading.Lock()
