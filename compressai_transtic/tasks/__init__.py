"""Machine tasks (plugins): recognition network, perceptual loss, protocol and metric.

Tasks are found through the entry-point group ``compressai_transtic.tasks``; the
built-in ones are registered there by this package's own ``pyproject.toml``::

    [project.entry-points."compressai_transtic.tasks"]
    cls = "compressai_transtic.tasks.classification:ClassificationTask"
    det = "compressai_transtic.tasks.detection:DetectionTask"
    seg = "compressai_transtic.tasks.detection:SegmentationTask"
    fidelity = "compressai_transtic.tasks.fidelity:FidelityTask"

A third-party package adds a task the same way (a :class:`Task` subclass). When this
package runs from a source checkout without installed metadata, the built-in table
above is used instead, so the built-ins are always available.

Example::

    from compressai_transtic.tasks import get_task
    task = get_task("det")                       # torchvision weights (cache or download)
    criterion = task.criterion(quality=1)        # loss = 0.2 * sum MSE(P2..P6) + 2.0 * bpp
    test_task = get_task("cls", weights="random")  # random ResNet50, no download
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import logging
from typing import Any, Dict, List, Type

from .base import Task
from .weights import TaskWeightsUnavailableError

__all__ = [
    "ENTRY_POINT_GROUP",
    "Task",
    "TaskWeightsUnavailableError",
    "available_tasks",
    "get_task",
    "get_task_class",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "compressai_transtic.tasks"
DISTRIBUTION = "compressai-transtic"


def _group_entry_points() -> List[Any]:
    eps = metadata.entry_points()
    if hasattr(eps, "select"):  # Python >= 3.10
        return list(eps.select(group=ENTRY_POINT_GROUP))
    return list(eps.get(ENTRY_POINT_GROUP, []))


def _our_metadata_installed() -> bool:
    try:
        metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return False
    return True


def _task_table() -> Dict[str, str]:
    """name -> ``module:attribute`` of every task, from the entry points."""
    table: Dict[str, str] = {}
    for ep in _group_entry_points():
        previous = table.get(ep.name)
        if previous is not None and previous != ep.value:
            raise RuntimeError(
                f"two packages register the task {ep.name!r} in the entry-point group "
                f"{ENTRY_POINT_GROUP!r}: {previous} and {ep.value}; uninstall one of them"
            )
        table[ep.name] = ep.value
    return table


def available_tasks() -> List[str]:
    """Names of the installed tasks (sorted)."""
    return sorted(_task_table())


def get_task_class(name: str) -> Type[Task]:
    """The :class:`Task` subclass registered under ``name``.

    Raises:
        KeyError: no task of that name (the message lists the available ones).
        TypeError: the entry point does not name a Task subclass.
    """
    table = _task_table()
    if name not in table:
        hint = (
            ""
            if _our_metadata_installed()
            else (f"; {DISTRIBUTION} is not installed, so its built-in tasks are not registered: pip install .")
        )
        raise KeyError(
            f"unknown task {name!r}; available tasks: {', '.join(sorted(table)) or 'none'} "
            f"(tasks are registered in the entry-point group {ENTRY_POINT_GROUP!r}){hint}"
        )
    module_name, _, attr = table[name].partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Task)):
        raise TypeError(f"task {name!r} -> {table[name]} is not a subclass of {Task.__module__}.Task")
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
