"""Registration of models into CompressAI 1.2.8's own name tables.

CompressAI has no plugin mechanism: its tools (``compressai.utils.eval_model``,
``compressai.utils.update_model``, the example training script) read plain
dicts. :func:`register_models` adds each model to all of them, in place:

- ``compressai.zoo.image_models`` and ``compressai.zoo.models`` (name -> zoo function),
- ``compressai.zoo.image.model_architectures`` (name -> class),
- ``compressai.zoo.image.cfgs`` and ``compressai.zoo.image.model_urls``,
- ``compressai.registry.MODELS`` (name -> class),
- an attribute of the ``compressai.zoo`` module (``-`` becomes ``_``), so that
  ``from compressai.zoo import tic`` works.

Models are found through the entry-point group ``compressai_transtic.models``:
each entry point names a :class:`ModelEntry`. This package's own models are
declared there too (see ``pyproject.toml``); another distribution can add
models by declaring entries in the same group.

Registration is idempotent, and refuses to replace a name that CompressAI (or
another package) already uses for a different object. It runs automatically
when CompressAI is imported (see :mod:`compressai_transtic._autoregister`);
``python -m compressai_transtic.registration`` runs it and lists the names.

This module imports only the standard library at import time (CompressAI
and torch are imported when registering).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any, Callable, Dict, Iterable, List, Mapping, MutableMapping, Optional, Tuple

logger = logging.getLogger(__name__)

__all__ = [
    "ENTRY_POINT_GROUP",
    "ModelEntry",
    "RegistrationError",
    "discover_entries",
    "register_models",
]

#: Entry-point group listing the models to register (values: :class:`ModelEntry` objects).
ENTRY_POINT_GROUP = "compressai_transtic.models"


class RegistrationError(RuntimeError):
    """A model cannot be registered (name clash, malformed entry, nothing installed)."""


@dataclass(frozen=True)
class ModelEntry:
    """What CompressAI needs to know about one model name.

    Args:
        name: name in CompressAI's tables (e.g. ``"transtic-cls"``); the
            ``compressai.zoo`` attribute is the name with ``-`` replaced by ``_``.
        zoo_function: ``f(quality, metric="mse", pretrained=False, progress=True, **kwargs)``.
        architecture: the model class; CompressAI's tools call its
            ``from_state_dict(state_dict)`` and ``MODELS[name]()``.
        cfgs: ``{quality: constructor arguments}``.
        model_urls: ``{metric: {quality: url}}`` of released weights (may be empty).
    """

    name: str
    zoo_function: Callable[..., Any]
    architecture: type
    cfgs: Mapping[int, Tuple[Any, ...]]
    model_urls: Mapping[str, Mapping[int, str]]

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "_").isidentifier():
            raise RegistrationError(
                f"invalid model name {self.name!r}: use letters, digits, '_' and '-' "
                "(it must map to a Python identifier)"
            )
        if self.name.endswith("-vbr"):
            raise RegistrationError(
                f"invalid model name {self.name!r}: CompressAI's eval_model treats names "
                "ending in '-vbr' as variable-bitrate models"
            )
        if not callable(self.zoo_function):
            raise RegistrationError(f"{self.name}: zoo_function {self.zoo_function!r} is not callable")
        if not isinstance(self.architecture, type) or not hasattr(self.architecture, "from_state_dict"):
            raise RegistrationError(
                f"{self.name}: architecture {self.architecture!r} must be a class with from_state_dict()"
            )

    @property
    def attribute(self) -> str:
        """Attribute name on the ``compressai.zoo`` module."""
        return self.name.replace("-", "_")


def _entry_points() -> List[Any]:
    eps = metadata.entry_points()
    if hasattr(eps, "select"):  # Python >= 3.10
        return list(eps.select(group=ENTRY_POINT_GROUP))
    return list(eps.get(ENTRY_POINT_GROUP, []))  # pragma: no cover - Python 3.9


def _discover() -> Tuple[List[ModelEntry], List[str]]:
    """Load the entries of the group; return them and one message per entry that failed."""
    entries: Dict[str, ModelEntry] = {}
    errors: List[str] = []
    eps = _entry_points()
    if not eps:
        raise RegistrationError(
            f"no models in the entry-point group {ENTRY_POINT_GROUP!r}: compressai-transtic "
            "is not installed in this environment (a source checkout on sys.path has no "
            "entry points). Install it with `pip install .` (or `pip install -e .`)."
        )
    for ep in eps:
        try:
            entry = ep.load()
        except Exception as exc:
            errors.append(f"entry point {ep.name} = {ep.value} cannot be loaded: {exc!r}")
            continue
        if not isinstance(entry, ModelEntry):
            errors.append(
                f"entry point {ep.name} = {ep.value} is a {type(entry).__name__}, not a "
                "compressai_transtic.registration.ModelEntry"
            )
        elif entry.name != ep.name:
            errors.append(f"entry point {ep.name} = {ep.value} names a ModelEntry called {entry.name!r}")
        elif ep.name in entries and entries[ep.name] is not entry:
            errors.append(f"two entry points of {ENTRY_POINT_GROUP!r} are named {ep.name!r}")
        else:
            entries[ep.name] = entry
    return list(entries.values()), errors


def discover_entries() -> List[ModelEntry]:
    """Load the :class:`ModelEntry` objects of the entry-point group.

    Raises:
        RegistrationError: the group is empty (the package is not installed:
            a source checkout on ``sys.path`` has no entry points), or an entry
            point cannot be loaded, does not name a matching ModelEntry, or
            shares its name with another.
    """
    entries, errors = _discover()
    if errors:
        raise RegistrationError("; ".join(errors))
    return entries


def _same(existing: Any, new: Any) -> bool:
    if existing is new:
        return True
    # Classes and functions must be the very same object; data tables may be equal copies.
    if callable(new) or callable(existing):
        return False
    return existing == new


def _tables() -> List[Tuple[str, MutableMapping[str, Any], Callable[[ModelEntry], Any]]]:
    # imported on use: this module stays standard-library only (see the module docstring)
    import compressai.registry
    import compressai.zoo
    import compressai.zoo.image

    return [
        ("compressai.zoo.image_models", compressai.zoo.image_models, lambda e: e.zoo_function),
        ("compressai.zoo.models", compressai.zoo.models, lambda e: e.zoo_function),
        (
            "compressai.zoo.image.model_architectures",
            compressai.zoo.image.model_architectures,
            lambda e: e.architecture,
        ),
        ("compressai.zoo.image.cfgs", compressai.zoo.image.cfgs, lambda e: dict(e.cfgs)),
        (
            "compressai.zoo.image.model_urls",
            compressai.zoo.image.model_urls,
            lambda e: {metric: dict(urls) for metric, urls in e.model_urls.items()},
        ),
        ("compressai.registry.MODELS", compressai.registry.MODELS, lambda e: e.architecture),
    ]


def _zoo_module() -> ModuleType:
    import compressai.zoo

    return compressai.zoo


def _check(entry: ModelEntry, tables, zoo: ModuleType) -> bool:
    """Raise on a clash; return True when ``entry`` is fully registered already."""
    complete = True
    for label, table, value_of in tables:
        if entry.name in table:
            if not _same(table[entry.name], value_of(entry)):
                raise RegistrationError(
                    f"cannot register model {entry.name!r}: {label} already maps it to {table[entry.name]!r}"
                )
        else:
            complete = False
    attribute = getattr(zoo, entry.attribute, None)
    if attribute is None:
        return False
    if attribute is not entry.zoo_function:
        raise RegistrationError(
            f"cannot register model {entry.name!r}: compressai.zoo.{entry.attribute} is already {attribute!r}"
        )
    return complete


def register_models(entries: Optional[Iterable[ModelEntry]] = None) -> List[str]:
    """Add models to CompressAI's tables (in place; idempotent).

    Each entry is registered in all tables or in none: its names are checked
    in every table before any is changed. Entries that can be registered are,
    even when others fail; the failures are then reported together.

    Args:
        entries: the models to register; default: every entry of the
            ``compressai_transtic.models`` entry-point group.

    Returns:
        The names newly registered (empty when all were registered already).

    Raises:
        RegistrationError: a name is taken by a different object in one of
            CompressAI's tables, two entries share a name, or an entry point
            cannot be loaded (the message lists every failure and what was
            registered).
    """
    if entries is None:
        entries, errors = _discover()
    else:
        entries, errors = list(entries), []
    tables = _tables()
    zoo = _zoo_module()

    registered: List[str] = []
    seen: Dict[str, ModelEntry] = {}
    for entry in entries:
        if entry.name in seen and seen[entry.name] is not entry:
            errors.append(f"several entries are named {entry.name!r}")
            continue
        seen[entry.name] = entry
        try:
            if _check(entry, tables, zoo):
                continue
        except RegistrationError as exc:
            errors.append(str(exc))
            continue
        for _label, table, value_of in tables:
            table.setdefault(entry.name, value_of(entry))
        setattr(zoo, entry.attribute, entry.zoo_function)
        registered.append(entry.name)
    if registered:
        logger.debug("registered %s into CompressAI", registered)
    if errors:
        done = f" (registered: {', '.join(registered)})" if registered else ""
        raise RegistrationError("; ".join(errors) + done)
    return registered


def main() -> int:
    """Register the models and list the ones CompressAI now knows (diagnostic CLI)."""
    try:
        register_models()
    except RegistrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    import compressai.zoo

    names = [e.name for e in discover_entries()]
    print("registered with CompressAI: " + ", ".join(n for n in names if n in compressai.zoo.image_models))
    return 0


if __name__ == "__main__":
    # `python -m` runs this file as __main__, a second copy of the module whose ModelEntry
    # is not the class the entry points return: run the package's own module instead
    from compressai_transtic.registration import main as package_main

    sys.exit(package_main())
