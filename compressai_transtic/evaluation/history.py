"""The rate points evaluated into an output folder, so that a later run merges its curves.

``codecs.json`` in the output folder lists every :class:`~.codecs.CodecSpec` that any run
evaluated there. A later run with other qualities or codecs builds its curves from the
records of all of them that are complete for its dataset, tasks and protocol (the
records' keys say so), instead of replacing ``tic-cls.json`` with its own points only.
The file is rewritten atomically. Nothing in it is lost: an entry this version cannot
read (one written by a newer version, say) is reported and kept as it is, not merged;
a file that is not such a list at all is appended to ``codecs.json.damaged``, reported,
and rebuilt from the current run (the records themselves are untouched).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

from ..console import shorten
from ..fileio import atomic_write_text
from .codecs import CodecSpec

__all__ = ["curve_identity", "remember"]

logger = logging.getLogger(__name__)


def _spec(entry: Any) -> CodecSpec:
    options = tuple((str(k), str(v)) for k, v in entry.pop("options", ()))
    return CodecSpec(**entry, options=options)


class _History(NamedTuple):
    specs: List[CodecSpec]
    unread: List[Any]  # entries this version cannot read, as they are
    others: Dict[str, Any]  # the file's other top-level fields, as they are


def _read(path: Path) -> _History:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return _History([], [], {})
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} cannot be read ({err}); fix or remove it, or use another output folder") from None
    try:
        document = json.loads(text)
        entries = document["codecs"]
        if not isinstance(entries, list):
            raise TypeError(f"'codecs' is a {type(entries).__name__}, not a list")
    except (ValueError, KeyError, TypeError, RecursionError) as err:
        _keep_damaged(path, text, err)
        return _History([], [], {})
    specs, unread = [], []
    for i, entry in enumerate(entries):
        try:
            specs.append(_spec(dict(entry)))
        except (ValueError, KeyError, TypeError) as err:
            logger.warning(
                "%s: entry %d is not a rate point of this version (%s); kept as it is, not merged", path, i, err
            )
            unread.append(entry)
    return _History(specs, unread, {k: v for k, v in document.items() if k != "codecs"})


def _keep_damaged(path: Path, text: str, err: BaseException) -> None:
    damaged = path.with_name(path.name + ".damaged")
    with open(damaged, "a", encoding="utf-8") as side:
        side.write(text if text.endswith("\n") else text + "\n")
    logger.warning(
        "%s is unreadable (%s): it is kept in %s and rewritten with this run's rate points; "
        "earlier ones are not merged into the curves",
        path,
        shorten(str(err), 200),
        damaged,
    )


def remember(path: Path, specs: Sequence[CodecSpec]) -> List[CodecSpec]:
    """Add ``specs`` to the history in ``path``; returns the earlier entries."""
    history = _read(path)
    known = {spec.key() for spec in history.specs}
    new = [spec for spec in specs if spec.key() not in known]
    if new or not path.exists():
        entries = history.unread + [asdict(spec) for spec in [*history.specs, *new]]
        atomic_write_text(path, json.dumps({**history.others, "codecs": entries}, indent=1) + "\n")
    return history.specs


def curve_identity(spec: CodecSpec) -> Tuple[Any, ...]:
    """What points of one curve share: the same codec family and kind of weights."""
    return (spec.architecture, spec.source, spec.random_base, spec.seed if spec.random_weights else None)
