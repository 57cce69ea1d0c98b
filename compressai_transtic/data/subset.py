"""Deterministic subsets for quick evaluation runs (``--limit N``)."""

from __future__ import annotations

from typing import List, Optional, Sequence, TypeVar

__all__ = ["evenly_spaced"]

T = TypeVar("T")


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
