"""What the command lines print, and where.

Results go to standard output, errors and log lines to standard error. When results
come from randomly initialised weights (no released weights at hand, or asked for),
every line carries :data:`RANDOM_TAG`: such figures test the pipeline and mean nothing,
and a line copied out of context must still say so.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Callable, Optional, Sized

__all__ = [
    "RANDOM_TAG",
    "USER_ERROR",
    "CommandError",
    "and_more",
    "ascii_escaped",
    "print_error",
    "printable",
    "printer",
    "report_error",
    "setup_logging",
    "shorten",
]

RANDOM_TAG = "[RANDOM WEIGHTS] "

#: exit status of a command refused for a user error (as argparse's)
USER_ERROR = 2


class CommandError(Exception):
    """A user error: the message is printed and the command exits with :data:`USER_ERROR`."""


def setup_logging(verbose: int = 0, random_weights: bool = False) -> None:
    """Log to stderr at WARNING (``verbose`` 1: INFO, 2: DEBUG); every line carries
    :data:`RANDOM_TAG` when results are random."""
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    fmt = (RANDOM_TAG if random_weights else "") + "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr, force=True)


def printer(random_weights: bool) -> Callable[[str], None]:
    """A ``print`` for result lines: to stdout, flushed, each line of a multi-line text
    tagged when results are random."""

    def out(line: str = "") -> None:
        for part in str(line).split("\n"):
            print((RANDOM_TAG if random_weights else "") + part, flush=True)

    return out


def shorten(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters (ending in ``...``) for a message: what an
    attacker put into a file must not flood the terminal."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: characters printed as escapes: terminal controls (Unicode category Cc) and the lone
#: surrogates that stand for undecodable bytes in file names (category Cs)
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def printable(text: Any, limit: Optional[int] = None) -> str:
    """``str(text)``, cut to ``limit`` characters when given, with terminal control
    characters and lone surrogates written as escapes (``\\x1b``, ``\\n``, ``\\udcff``)."""
    text = shorten(str(text), limit) if limit else str(text)
    return _UNPRINTABLE.sub(lambda match: repr(match.group())[1:-1], text)


def ascii_escaped(text: Any, limit: int = 200) -> str:
    """``text`` with every non-printable and non-ASCII character escaped as in a Python
    literal, cut to ``limit`` characters: for text from code of unknown origin (plugins)."""
    return shorten(ascii(str(text))[1:-1], limit)


def and_more(items: Sized, shown: int) -> str:
    """`` and N more`` after the first ``shown`` of ``items`` named in a message, or ``""``."""
    return f" and {len(items) - shown} more" if len(items) > shown else ""


def print_error(message: str, random_weights: bool = False) -> int:
    """Print ``error: message`` to stderr (each line tagged when results would be random);
    returns the exit status of a user error."""
    for line in f"error: {message}".split("\n"):
        print((RANDOM_TAG if random_weights else "") + line, file=sys.stderr)
    return USER_ERROR


def report_error(err: BaseException, random_weights: bool = False) -> int:
    """Print ``err`` as :func:`print_error` does (its type when it has no message);
    returns the exit status of a user error."""
    return print_error(str(err) or type(err).__name__, random_weights)
