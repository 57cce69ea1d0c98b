"""How deeply JSON-like values nest: a leaf for the readers of user files (training
settings, COCO annotations), which refuse values nested deeper than they use before a
recursive copy, comparison or ``repr`` of them can exhaust Python's stack."""

from __future__ import annotations

from typing import Any

__all__ = ["nests_deeper"]


def nests_deeper(value: Any, depth: int) -> bool:
    """Whether lists, tuples and dicts nest more than ``depth`` levels deep in ``value``
    (found level by level, without recursion)."""
    level = [value]
    for _ in range(depth + 1):
        level = [
            child
            for container in level
            if isinstance(container, (list, tuple, dict))
            for child in (container.values() if isinstance(container, dict) else container)
        ]
        if not level:
            return False
    return True
