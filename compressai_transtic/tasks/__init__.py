"""Machine tasks (plugins): recognition network, perceptual loss, protocol and metric.

Tasks are found through the entry-point group ``compressai_transtic.tasks``; the
built-in ones are registered there by this package's own ``pyproject.toml``::

    [project.entry-points."compressai_transtic.tasks"]
    cls = "compressai_transtic.tasks.classification:ClassificationTask"
    det = "compressai_transtic.tasks.detection:DetectionTask"
    seg = "compressai_transtic.tasks.detection:SegmentationTask"
    fidelity = "compressai_transtic.tasks.fidelity:FidelityTask"

A third-party package adds a task the same way (a :class:`Task` subclass). Without
this package's installed metadata (a source checkout on ``sys.path``) the group holds
no built-ins, and an unknown task name says to ``pip install .``.

A plugin is refused, with a warning naming its entry point and distribution, when its
name is not a simple identifier, is a built-in's (the built-in keeps it), or is
declared by several third-party distributions (all of them are refused); the other
tasks stay available. A plugin whose import fails is a :class:`PluginError` naming it,
raised when that task is asked for.

Example::

    from compressai_transtic.tasks import get_task
    task = get_task("det")                       # torchvision weights (cache or download)
    criterion = task.criterion(quality=1)        # loss = 0.2 * sum MSE(P2..P6) + 2.0 * bpp
    test_task = get_task("cls", weights="random")  # random ResNet50, no download
"""

from __future__ import annotations

import importlib.metadata as metadata
import logging
from typing import Any, Dict, List, Set, Tuple, Type

from ..registration import DISTRIBUTION, Plugin, PluginError, escaped, find_plugins, load_plugin, select_plugins
from .base import Task
from .weights import TaskWeightsUnavailableError

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginError",
    "Task",
    "TaskWeightsUnavailableError",
    "available_tasks",
    "get_task",
    "get_task_class",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "compressai_transtic.tasks"

#: the refusals already logged in this process (each is logged once)
_reported: Set[str] = set()


def _our_metadata_installed() -> bool:
    try:
        metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return False
    return True


def _tasks() -> Tuple[Dict[str, Plugin], Dict[str, str]]:
    """The entry point of each task name, and why each refused name is (logged once)."""
    found, unreadable = find_plugins(ENTRY_POINT_GROUP)
    chosen, problems = select_plugins(found, "task")
    for problem in unreadable + [why for _name, why in problems]:
        if problem not in _reported:
            _reported.add(problem)
            logger.warning("%s", problem)
    refused = {name: why for name, why in reversed(problems) if name not in chosen}  # the first reason
    return chosen, refused


def _task_table() -> Dict[str, str]:
    """name -> ``module:attribute`` of every task, from the entry points."""
    return {name: plugin.value for name, plugin in _tasks()[0].items()}


def available_tasks() -> List[str]:
    """Names of the installed tasks (sorted; refused plugins left out)."""
    return sorted(_tasks()[0])


def get_task_class(name: str) -> Type[Task]:
    """The :class:`Task` subclass registered under ``name``.

    Raises:
        KeyError: no task of that name (the message lists the available ones).
        PluginError: the name was refused (see the module docstring), or its entry
            point cannot be loaded or does not name a Task subclass; the message
            names the entry point and its distribution.
    """
    chosen, refused = _tasks()
    if name in refused:
        raise PluginError(refused[name])
    if name not in chosen:
        hint = (
            ""
            if _our_metadata_installed()
            else (f"; {DISTRIBUTION} is not installed, so its built-in tasks are not registered: pip install .")
        )
        raise KeyError(
            f"unknown task {name!r}; available tasks: {', '.join(sorted(chosen)) or 'none'} "
            f"(tasks are registered in the entry-point group {ENTRY_POINT_GROUP!r}){hint}"
        )
    plugin = chosen[name]
    obj = load_plugin(plugin, "task")
    if not (isinstance(obj, type) and issubclass(obj, Task)):
        what = f"the class {obj.__qualname__}" if isinstance(obj, type) else f"an object of type {type(obj).__name__}"
        raise PluginError(
            f"task '{escaped(name)}' from {plugin.describe()} names {escaped(what)}, "
            f"not a subclass of {Task.__module__}.Task"
        )
    return obj


def get_task(name: str, **options: Any) -> Task:
    """Build the task registered under ``name``.

    Args:
        name: ``cls``, ``det``, ``seg`` or a plugin's name.
        **options: constructor options of the task, e.g. ``weights`` (``"default"``,
            a path, or ``"random"`` for random initialisation without download),
            ``backend`` (``"torchvision"`` or ``"detectron2"``), ``device`` and
            protocol settings (``crop`` for cls; ``short_edge``, ``max_size``,
            ``code_multiple`` for det/seg).
    """
    return get_task_class(name)(**options)
