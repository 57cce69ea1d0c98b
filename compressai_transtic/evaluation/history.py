"""The rate points evaluated into an output folder, so that a later run merges its curves.

``codecs.json`` in the output folder lists every :class:`~.codecs.CodecSpec` that any run
evaluated there. A later run with other qualities or codecs builds its curves from the
records of all of them that are complete for its dataset, tasks and protocol (the
records' keys say so), instead of replacing ``tic-cls.json`` with its own points only.
The file is rewritten atomically; an unreadable one is reported and rebuilt from the
current run (the records themselves are untouched).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, List, Sequence, Tuple

from ..fileio import atomic_write_text
from .codecs import CodecSpec

__all__ = ["curve_identity", "read_history", "remember"]

logger = logging.getLogger(__name__)


def _spec(entry: Any) -> CodecSpec:
    options = tuple((str(k), str(v)) for k, v in entry.pop("options", ()))
    return CodecSpec(**entry, options=options)


def read_history(path: Path) -> List[CodecSpec]:
    """The rate points recorded in ``path`` (empty when missing or unreadable)."""
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text())["codecs"]
        return [_spec(dict(entry)) for entry in entries]
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning(
            "%s is unreadable (%s): earlier rate points are not merged into the curves; "
            "it is rewritten with this run's",
            path,
            err,
        )
        return []


def remember(path: Path, specs: Sequence[CodecSpec]) -> List[CodecSpec]:
    """Add ``specs`` to the history in ``path``; returns the earlier entries."""
    earlier = read_history(path)
    known = {spec.key() for spec in earlier}
    new = [spec for spec in specs if spec.key() not in known]
    if new or not path.exists():
        entries = [asdict(spec) for spec in [*earlier, *new]]
        atomic_write_text(path, json.dumps({"codecs": entries}, indent=1) + "\n")
    return earlier


def curve_identity(spec: CodecSpec) -> Tuple[Any, ...]:
    """What points of one curve share: the same codec family and kind of weights."""
    return (spec.architecture, spec.source, spec.random_base, spec.seed if spec.random_weights else None)
