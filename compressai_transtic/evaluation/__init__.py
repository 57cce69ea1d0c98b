"""Rate-accuracy evaluation: BD-rate, the evaluator, its records and plots.

The test protocols (:mod:`compressai_transtic.protocol`) and the metrics
(:mod:`compressai_transtic.metrics`) sit below this package and the tasks, which
both use them.

Modules (imported on demand, so that ``import compressai_transtic.evaluation`` is cheap):

- :mod:`.bd`: BD-rate and BD-metric;
- :mod:`.codecs`: rate points (:class:`~.codecs.CodecSpec`) and real-bitstream coding;
- :mod:`.runner`: the resumable evaluator (:class:`~.runner.Evaluation`);
- :mod:`.curves`: records aggregated into curves (:class:`~.curves.Curve`);
- :mod:`.records`: the per-image records an evaluation resumes from;
- :mod:`.outputs`, :mod:`.results`, :mod:`.plot`: output files;
- :mod:`.selection`: what an ``eval`` command line asks for, as tasks and rate points;
- :mod:`.cli`: the ``eval`` command (``python -m compressai_transtic.evaluation`` is
  ``compressai-transtic eval``);
- :mod:`.curve_commands`: the ``compare``, ``plot`` and ``table`` commands on result files;
- :mod:`.demo`: the ``demo`` command;
- :mod:`.eval_model`: CompressAI's ``eval_model`` with this package's models
  registered first, for interpreters that skip the start-up hook.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "bd",
    "cli",
    "codecs",
    "curve_commands",
    "curves",
    "demo",
    "outputs",
    "plot",
    "records",
    "results",
    "runner",
    "selection",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
