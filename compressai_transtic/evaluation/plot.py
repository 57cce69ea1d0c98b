"""Rate-accuracy plots (PNG, rendered by matplotlib's Agg canvas) of one or more curve files."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Union

from .results import atomic_write_bytes, curve_values, load_curve

__all__ = ["axis_label", "plot_curves"]

logger = logging.getLogger(__name__)

_UNITS = {"psnr-rgb": "dB", "ms-ssim-rgb": ""}


def axis_label(metric: str, curve: Optional[Mapping[str, Any]] = None) -> str:
    """Axis label of a metric, with its unit (from the curve file when it says)."""
    unit = None
    if curve is not None:
        unit = curve.get("units", {}).get(metric)
    if unit is None:
        unit = _UNITS.get(metric, "%")
    return f"{metric} [{unit}]" if unit else metric


def plot_curves(
    curves: Sequence[Union[str, Path, Mapping[str, Any]]],
    output: Union[str, Path],
    metric: Optional[str] = None,
    title: Optional[str] = None,
    show_reference: bool = True,
) -> Path:
    """Plot rate (bpp) against a metric for several curves and write a PNG atomically.

    Curves with random weights are labelled "[RANDOM WEIGHTS]"; the uncompressed
    reference accuracy of each distinct task network is drawn as a dashed line.

    Args:
        curves: curve files (or their loaded contents).
        output: the PNG file.
        metric: the metric to plot (default: the first curve's ``primary_metric``, or
            ``psnr-rgb`` for files without one).
        title: plot title (default: the task names and the metric).
        show_reference: draw the uncompressed reference lines.
    """
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, leaves the user's backend alone

    loaded: List[Mapping[str, Any]] = [c if isinstance(c, Mapping) else load_curve(c) for c in curves]
    names = [str(c) if not isinstance(c, Mapping) else c.get("name", "?") for c in curves]
    if not loaded:
        raise ValueError("nothing to plot: no curve files given")
    metric = metric or loaded[0].get("primary_metric") or "psnr-rgb"
    fig = Figure(figsize=(6.4, 4.8), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    references: dict = {}
    any_random = False
    for curve, source in zip(loaded, names):
        ys = curve_values(curve, metric, source)
        xs = [math.nan if v is None else float(v) for v in curve["results"]["bpp"]]
        points = sorted((x, y) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y))
        random = bool(curve.get("random_weights"))
        any_random |= random
        label = str(curve.get("name", source)) + (" [RANDOM WEIGHTS]" if random else "")
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=label)
        ref = (curve.get("reference") or {}).get(metric)
        if show_reference and ref is not None and math.isfinite(float(ref)):
            references.setdefault((round(float(ref), 6), curve.get("task"), random), None)
    for i, (value, task, random) in enumerate(references):
        label = f"uncompressed ({task})" if task else "uncompressed"
        ax.axhline(value, color="0.35", linestyle=("--", ":", "-.")[i % 3], linewidth=1.2,
                   label=label + (" [RANDOM WEIGHTS]" if random else ""))
    ax.set_xlabel("rate [bpp]")
    ax.set_ylabel(axis_label(metric, loaded[0]))
    tasks = sorted({str(c["task"]) for c in loaded if c.get("task")})
    default_title = f"{metric} vs rate" + (f" ({', '.join(tasks)})" if tasks else "")
    ax.set_title((title or default_title) + ("\nRANDOM WEIGHTS: not meaningful" if any_random else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    path = atomic_write_bytes(output, buffer.getvalue())
    logger.info("wrote %s", path)
    return path
