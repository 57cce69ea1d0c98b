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

Plugins (the entry points of other distributions, here and in
:mod:`compressai_transtic.tasks`) are refused one by one, each named by its entry
point and distribution, without affecting the others:

- a name that is not a simple identifier (see :data:`NAME_RULE`);
- a name of a built-in (an entry point of the ``compressai-transtic``
  distribution itself; where an entry point points does not make it one): the
  built-in wins, and every other distribution's entry point of that name is refused;
- a name that several third-party distributions declare: all of them are
  refused, whatever their values or their order on ``sys.path``;
- an entry point whose import raises anything but :class:`KeyboardInterrupt`
  (``SystemExit`` included), or names the wrong kind of object.

This module imports only the standard library and the leaf :mod:`.console` at
import time (CompressAI and torch are imported when registering).
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any, Callable, Dict, Iterable, List, Mapping, MutableMapping, Optional, Sequence, Tuple

from .console import ascii_escaped, print_error

logger = logging.getLogger(__name__)

__all__ = [
    "DISTRIBUTION",
    "ENTRY_POINT_GROUP",
    "NAME_RULE",
    "ModelEntry",
    "Plugin",
    "PluginError",
    "RegistrationError",
    "discover_entries",
    "escaped",
    "find_plugins",
    "load_plugin",
    "register_models",
    "select_plugins",
]

#: Entry-point group listing the models to register (values: :class:`ModelEntry` objects).
ENTRY_POINT_GROUP = "compressai_transtic.models"


#: the distribution whose entry points are the built-ins
DISTRIBUTION = "compressai-transtic"
#: what a model or task name may hold (checked before a plugin is loaded)
NAME_RULE = "ASCII letters, digits, '-', '_' and '.', starting with a letter or digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class RegistrationError(RuntimeError):
    """A model cannot be registered (name clash, malformed entry, nothing installed).

    Attributes:
        registered: the names newly registered before the error was raised.
        problems: one message per entry point (or entry) not registered, saying why.
    """

    def __init__(self, message: str, registered: Sequence[str] = (), problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.registered = list(registered)
        self.problems = list(problems)


class PluginError(RuntimeError):
    """A plugin's entry point cannot be loaded, names the wrong kind of object, or is refused."""


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


# ---------------------------------------------------------------------------- plugins
#: text from a plugin, safe to print (:func:`~compressai_transtic.console.ascii_escaped`)
escaped = ascii_escaped


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Plugin:
    """One entry point of a group and the distribution that declares it."""

    distribution: str
    entry_point: Any  # importlib.metadata.EntryPoint

    @property
    def name(self) -> str:
        return str(self.entry_point.name)

    @property
    def value(self) -> str:
        return str(self.entry_point.value)

    @property
    def builtin(self) -> bool:
        """Declared by this package's own distribution (:data:`DISTRIBUTION`); where the
        entry point points does not matter."""
        return _normalized(self.distribution) == DISTRIBUTION

    def describe(self) -> str:
        entry_point = f"{escaped(self.name)} = {escaped(self.value)}"
        return f"entry point '{entry_point}' of distribution '{escaped(self.distribution)}'"


def _distribution_name(dist: Any) -> Optional[str]:
    meta = dist.metadata
    return str(meta["Name"]) if meta is not None and "Name" in meta else None


def find_plugins(group: str) -> Tuple[List[Plugin], List[str]]:
    """The entry points of ``group`` with their distributions, and one message per
    distribution whose entry points cannot be read.

    A distribution found twice on ``sys.path`` counts once (the first, as in
    :func:`importlib.metadata.entry_points`).
    """
    plugins: List[Plugin] = []
    problems: List[str] = []
    seen = set()
    for dist in metadata.distributions():
        try:
            name = _distribution_name(dist)
            if name is not None and _normalized(name) in seen:
                continue
            eps = [ep for ep in dist.entry_points if ep.group == group]
        except Exception as exc:  # a broken distribution must not hide the others
            where = getattr(dist, "_path", "?")
            problems.append(
                f"the entry points of the distribution at {escaped(str(where))} cannot be read: {_exception_text(exc)}"
            )
            continue
        if name is not None:
            seen.add(_normalized(name))
        plugins.extend(Plugin(name or "(unnamed)", ep) for ep in eps)
    return plugins, problems


def _settle(kind: str, name: str, candidates: List[Plugin]) -> Tuple[Optional[Plugin], List[str]]:
    """The entry point that gets ``name`` (or None), and why the others do not.

    A built-in keeps its name, and every third-party entry point declaring it is
    refused (whatever it points to). Otherwise the name goes to the one third-party
    distribution declaring it; when several distinct distributions do, all of them
    are refused, whatever the values.
    """
    ordered = sorted(candidates, key=lambda c: (_normalized(c.distribution), c.distribution, c.value))
    builtins = [c for c in ordered if c.builtin]
    contenders = builtins or ordered
    distributions = {_normalized(c.distribution) for c in contenders}
    if len(distributions) > 1:  # only third-party ones: the built-ins are one distribution
        listed = "; ".join(c.describe() for c in contenders)
        why = f"{kind} '{escaped(name)}' is refused: several distributions declare it ({listed}); uninstall all but one"
        return None, [why]
    if len({c.value for c in contenders}) > 1:
        listed = "; ".join(c.describe() for c in contenders)
        why = (
            f"{kind} '{escaped(name)}' is refused: distribution '{escaped(contenders[0].distribution)}' "
            f"declares it several times, pointing to different objects ({listed})"
        )
        return None, [why] + _refused_for_builtin(kind, name, ordered, builtins)
    return contenders[0], _refused_for_builtin(kind, name, ordered, builtins)


def _refused_for_builtin(kind: str, name: str, ordered: List[Plugin], builtins: List[Plugin]) -> List[str]:
    """Why each third-party entry point declaring a built-in's name is refused."""
    if not builtins:
        return []
    return [
        f"{kind} '{escaped(name)}' from {c.describe()} is refused: the name belongs to a built-in {kind} of "
        f"{DISTRIBUTION}"
        for c in ordered
        if not c.builtin
    ]


def select_plugins(plugins: Sequence[Plugin], kind: str) -> Tuple[Dict[str, Plugin], List[Tuple[str, str]]]:
    """The entry point that gets each name, and ``(name, why)`` per entry point refused.

    ``kind`` (``"model"``, ``"task"``) words the messages. Refused: names that do not
    follow :data:`NAME_RULE`; a built-in's name declared by another distribution
    (see :attr:`Plugin.builtin`); a name several third-party distributions declare
    (all of them, whatever their values).
    """
    by_name: Dict[str, List[Plugin]] = {}
    problems: List[Tuple[str, str]] = []
    for plugin in plugins:
        if _NAME.fullmatch(plugin.name):
            by_name.setdefault(plugin.name, []).append(plugin)
        else:
            why = f"{kind} name '{escaped(plugin.name)}' from {plugin.describe()} is refused"
            problems.append((plugin.name, f"{why}: a {kind} name may hold only {NAME_RULE}"))
    chosen: Dict[str, Plugin] = {}
    for name in sorted(by_name):
        winner, refused = _settle(kind, name, by_name[name])
        problems.extend((name, why) for why in refused)
        if winner is not None:
            chosen[name] = winner
    return chosen, problems


def _exception_text(exc: BaseException) -> str:
    """What a plugin's exception says, safe to print (its ``str`` may itself fail)."""
    try:
        text = f"it called sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}"
    except Exception:
        text = f"{type(exc).__name__} (its message cannot be shown)"
    return escaped(text, limit=300)


def load_plugin(plugin: Plugin, kind: str) -> Any:
    """The object the entry point names.

    Raises:
        PluginError: importing it raised (anything but KeyboardInterrupt, which
            propagates: a plugin calling ``sys.exit()`` must not end the program).
    """
    try:
        return plugin.entry_point.load()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit & co. from a plugin's import are reported
        raise PluginError(
            f"{kind} '{escaped(plugin.name)}' cannot be loaded from {plugin.describe()}: {_exception_text(exc)}"
        ) from exc


# ---------------------------------------------------------------------------- models
def _model_entry(plugin: Plugin) -> ModelEntry:
    """The ModelEntry of an entry point (raises PluginError)."""
    entry = load_plugin(plugin, "model")
    if not isinstance(entry, ModelEntry):
        raise PluginError(
            f"model '{escaped(plugin.name)}' from {plugin.describe()} names an object of type "
            f"{escaped(type(entry).__name__)}, not a compressai_transtic.registration.ModelEntry"
        )
    if entry.name != plugin.name:
        raise PluginError(
            f"model '{escaped(plugin.name)}' from {plugin.describe()} names a ModelEntry called '{escaped(entry.name)}'"
        )
    return entry


def _discover() -> Tuple[List[ModelEntry], List[str]]:
    """Load the entries of the group; return them and one message per entry point refused."""
    found, problems = find_plugins(ENTRY_POINT_GROUP)
    if not any(p.builtin for p in found):
        problems.append(
            f"no built-in models in the entry-point group {ENTRY_POINT_GROUP!r}: {DISTRIBUTION} "
            "is not installed in this environment (a source checkout on sys.path has no "
            "entry points). Install it with `pip install .` (or `pip install -e .`)."
        )
    chosen, refused = select_plugins(found, "model")
    problems.extend(why for _name, why in refused)
    entries: List[ModelEntry] = []
    for plugin in chosen.values():
        try:
            entries.append(_model_entry(plugin))
        except PluginError as exc:
            problems.append(str(exc))
    return entries, problems


def discover_entries() -> List[ModelEntry]:
    """Load the :class:`ModelEntry` objects of the entry-point group.

    Raises:
        RegistrationError: the built-ins are missing (the package is not
            installed: a source checkout on ``sys.path`` has no entry points), or
            an entry point is refused (see :func:`select_plugins`), cannot be
            loaded, or does not name a matching ModelEntry.
    """
    entries, errors = _discover()
    if errors:
        raise RegistrationError("; ".join(errors), problems=errors)
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
            CompressAI's tables, two entries share a name, or an entry point is
            refused or cannot be loaded (the message lists every failure and what
            was registered; so do its ``problems`` and ``registered``).
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
        raise RegistrationError("; ".join(errors) + done, registered=registered, problems=errors)
    return registered


def main() -> int:
    """Register the models, list the ones CompressAI now knows and say which were
    refused, and why (diagnostic CLI; exit status 1 when one was)."""
    entries, problems = _discover()
    try:
        register_models(entries)
    except RegistrationError as exc:
        problems += exc.problems
    image_models = _zoo_module().image_models
    known = [e.name for e in entries if image_models.get(e.name) is e.zoo_function]
    print("registered with CompressAI: " + (", ".join(known) or "none"))
    for problem in problems:
        print_error(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    # `python -m` runs this file as __main__, a second copy of the module whose ModelEntry
    # is not the class the entry points return: run the package's own module instead
    from compressai_transtic.registration import main as package_main

    sys.exit(package_main())
