"""String-valued enumerations for the package's typed settings.

Python 3.11 has :class:`enum.StrEnum`; this package supports 3.9, whose ``(str, Enum)``
members print as ``Class.MEMBER``. A :class:`StrEnum` member *is* its value: it
compares equal to it, prints, formats and JSON encodes as that string, and its
``repr`` is the string's, so the reprs of the settings dataclasses that messages show
(``PromptConfig(depth='deep', ...)``) read the same. Settings read from files (JSON
records, ``.ttic`` headers, TOML) keep their spelling and their fingerprints.
"""

from __future__ import annotations

import enum
from typing import Tuple, Type, TypeVar

__all__ = ["StrEnum", "parse_choice"]

E = TypeVar("E", bound="StrEnum")


class StrEnum(str, enum.Enum):
    """An enumeration whose members are strings (their values)."""

    def __str__(self) -> str:
        return str(self.value)

    def __repr__(self) -> str:
        return repr(str(self.value))

    @classmethod
    def values(cls) -> Tuple[str, ...]:
        """The members' values in definition order (command-line ``choices``)."""
        return tuple(str(m.value) for m in cls)


def parse_choice(kind: Type[E], value: object, what: str) -> E:
    """``value`` as a member of ``kind`` (a member or its value), or ``ValueError``
    naming ``what`` and the values accepted."""
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(kind.values())}") from None
