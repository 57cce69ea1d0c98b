"""Checks of values read from JSON, TOML or torch files written by someone else, or
given by a caller: a leaf for the readers of user files (training settings and
checkpoints, COCO annotations, evaluation records and task predictions) and the
arguments of the models' API.

- :func:`is_integer`, :func:`is_finite_number`: what a number field may hold (never a
  boolean, NaN, infinity or an integer beyond the float range);
- :func:`as_index`: an integer argument of any library (Python, NumPy, a 0-d integer
  tensor), never a boolean or a float;
- :func:`nests_deeper`: values nested deeper than a reader uses, refused before a
  recursive copy, comparison or ``repr`` of them can exhaust Python's stack.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Optional

__all__ = ["as_index", "is_finite_number", "is_integer", "nests_deeper"]


def as_index(value: Any) -> Optional[int]:
    """``value`` as a Python ``int`` when it is an integer that ``operator.index``
    takes (``int``, a NumPy integer, a 0-d integer tensor), else ``None``: booleans
    and floats (``2.0``) are not integers here."""
    if isinstance(value, bool) or type(value).__name__ == "bool_" or str(getattr(value, "dtype", "")) == "torch.bool":
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def is_integer(value: Any) -> bool:
    """A JSON integer (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A finite JSON number (not a boolean, not an integer beyond the float range)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond the float range
        return False


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
