"""compressai-transtic: TIC and TransTIC learned image codecs for CompressAI.

The package root stays import-light on purpose: a ``.pth`` startup hook imports
``compressai_transtic._autoregister`` in every interpreter, so nothing here may
import torch. Submodules are loaded on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0.dev0"

#: the message (a regular expression) of the FutureWarning that torch raises for every
#: ``torch.jit.script`` call CompressAI 1.2.8 makes at import; the startup hook
#: (:mod:`._autoregister`) and the command lines silence it
_JIT_SCRIPT_WARNING = r"`torch\.jit\.script` is deprecated"

#: every public submodule (module or subpackage), imported on first attribute access
_LAZY_SUBMODULES = (
    "adapter_files",
    "bitmap",
    "bitstream",
    "checkpoint",
    "cli",
    "codec_choice",
    "complexity",
    "console",
    "container",
    "data",
    "devices",
    "download",
    "entropy_coder",
    "entropy_models",
    "evaluation",
    "filecodec",
    "fileio",
    "filekinds",
    "imageio",
    "integrity",
    "jsonvalues",
    "layers",
    "listing",
    "losses",
    "metrics",
    "models",
    "prompts",
    "protocol",
    "quality_maps",
    "registration",
    "state_dicts",
    "strenum",
    "tasks",
    "torchfile",
    "training",
    "trust",
    "zoo",
)


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(list(globals()) + list(_LAZY_SUBMODULES))
