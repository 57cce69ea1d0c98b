"""The caches of the layers: a small least-recently-used map, and values derived from
parameters.

One :class:`LRUCache` holds the window indices (:mod:`.geometry`, per map size), and
each Swin block has one for its attention biases (per map size, prompt layout and
bias table, whose storage an entry keeps alive, as :class:`DerivedValue` does). Both
are rebuilt on a miss, so an evicted entry only costs time. The cache takes a
lock because several threads may run the same layer at once. A
:class:`DerivedValue` holds one value computed from some tensors (the packed
attention weights, the prompt generator's folded convolutions, the entropy coder's
tables) and rebuilds it when one of them changes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Dict, Generic, Hashable, Iterable, Optional, Sequence, Tuple, TypeVar

from torch import Tensor

V = TypeVar("V")

__all__ = ["DerivedValue", "LRUCache", "tensors_key"]


def tensors_key(tensors: Iterable[Optional[Tensor]]) -> Tuple[Hashable, ...]:
    """A key that changes whenever one of ``tensors`` is changed in place (its version
    counter) or replaced by a tensor at another address, of another shape or dtype or
    on another device. A freed tensor's address can be taken by its successor; a cache
    that must tell them apart keeps the old storage alive (:class:`DerivedValue`)."""
    return tuple(None if t is None else (t._version, t.data_ptr(), tuple(t.shape), t.dtype, t.device) for t in tensors)


class DerivedValue(Generic[V]):
    """One value computed from some tensors, rebuilt when one of them changes in place
    or is replaced.

    The entry keeps the storages it was built from alive, so that no later tensor can
    take over one of their addresses and pass for it. Copies of the owner (deepcopy,
    pickling) start empty.
    """

    def __init__(self) -> None:
        self._entry: Optional[Tuple[Tuple[Hashable, ...], Tuple[Optional[Tensor], ...], V]] = None

    def get(self, tensors: Sequence[Optional[Tensor]], build: Callable[[], V]) -> V:
        """The value for ``tensors``, built by ``build()`` when they changed."""
        key = tensors_key(tensors)
        entry = self._entry
        if entry is None or entry[0] != key:
            sources = tuple(None if t is None else t.detach() for t in tensors)  # same storage and version counter
            entry = (key, sources, build())
            self._entry = entry
        return entry[2]

    def __getstate__(self) -> Dict[str, Any]:
        return {}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self._entry = None


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
