"""What the tests of registration and plugins need to know of the installed package."""

from __future__ import annotations

from importlib import metadata

import pytest

#: the models this package registers with CompressAI (its pyproject's entry points)
BUILTIN_MODELS = ("tic", "tic-chsel", "tic-roi", "tic-sft", "transtic", "transtic-cls", "transtic-det", "transtic-seg")


def _installed() -> bool:
    try:
        metadata.distribution("compressai-transtic")
    except metadata.PackageNotFoundError:
        return False
    return True


#: the built-ins and the start-up hook come from the installed metadata
needs_install = pytest.mark.skipif(
    not _installed(),
    reason="compressai-transtic is not installed (its entry points come from the installed "
    "metadata); run `pip install .` (.ci/run does)",
)
