"""Deterministic subsets for quick evaluation runs (``--limit N``)."""

from __future__ import annotations

import copy
from typing import Iterator, List, Optional, Sequence, TypeVar

__all__ = ["evenly_spaced", "ImageList"]

T = TypeVar("T")
S = TypeVar("S", bound="ImageList")


def evenly_spaced(items: Sequence[T], limit: Optional[int]) -> List[T]:
    """``limit`` items spread evenly over ``items`` (all of them if ``limit`` is None).

    Item ``floor(i * n / limit)`` is taken for ``i = 0 .. limit - 1``, so that a quick
    run on a class-sorted ImageNet tree sees many classes rather than the first one.

    Args:
        items: the full, ordered collection.
        limit: how many to keep (``None`` or ``>= len(items)``: keep all).
    """
    n = len(items)
    if limit is None or limit >= n:
        return list(items)
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    return [items[(i * n) // limit] for i in range(limit)]


class ImageList(Sequence[T]):
    """A read-only list of dataset items (``self.items``) with :meth:`subset`.

    Subclasses fill ``self.items`` and add what their format needs.
    """

    items: List[T]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def subset(self: S, limit: Optional[int]) -> S:
        """A copy holding ``limit`` items spread evenly over this set (all if ``None``).

        Args:
            limit: number of items to keep (``--limit``).
        """
        new = copy.copy(self)
        new.items = evenly_spaced(self.items, limit)
        return new

    def without(self: S, drop: Sequence[T]) -> S:
        """A copy without the items in ``drop`` (e.g. unreadable images)."""
        gone = {id(item) for item in drop}
        new = copy.copy(self)
        new.items = [item for item in self.items if id(item) not in gone]
        return new
