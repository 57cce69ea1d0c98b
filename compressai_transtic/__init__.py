"""compressai-transtic: TIC and TransTIC learned image codecs for CompressAI.

The package root stays import-light on purpose: a ``.pth`` startup hook imports
``compressai_transtic._autoregister`` in every interpreter, so nothing here may
import torch. Submodules are loaded on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0.dev0"

_LAZY_SUBMODULES = (
    "layers",
    "models",
    "prompts",
    "zoo",
    "losses",
    "tasks",
    "evaluation",
    "training",
    "registration",
    "checkpoint",
    "complexity",
    "bitstream",
    "data",
    "cli",
)


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(list(globals()) + list(_LAZY_SUBMODULES))
