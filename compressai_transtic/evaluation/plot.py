"""Rate-accuracy plots (PNG, PDF or SVG, rendered by matplotlib without pyplot) of one or more curve files."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .bd import curve_bd_rate, warn_of_falling_curves
from .results import atomic_write_bytes, axis_label, curve_values, load_curve, metric_title

__all__ = ["FORMATS", "axis_label", "plot_curves", "plot_format"]

logger = logging.getLogger(__name__)

#: output formats, by file extension
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
#: one marker and line style per curve, so curves stay apart in print and in grey
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINES = ("-", "--", "-.", ":")


def plot_format(output: Union[str, Path]) -> str:
    """The format that ``output``'s extension names (PNG, PDF or SVG).

    Raises:
        ValueError: any other extension.
    """
    suffix = Path(output).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{output}: plots are written as {', '.join(FORMATS)}; choose one of these extensions")
    return FORMATS[suffix]


def plot_curves(
    curves: Sequence[Union[str, Path, Mapping[str, Any]]],
    output: Union[str, Path],
    metric: Optional[str] = None,
    title: Optional[str] = None,
    show_reference: bool = True,
    dpi: int = 150,
    bd_rate_against_first: bool = False,
) -> Path:
    """Plot rate (bpp) against a metric for several curves and write the file atomically,
    in the format its extension names (PNG, PDF or SVG).

    Curves with random weights are labelled "[RANDOM WEIGHTS]"; the uncompressed
    reference accuracy of each distinct task network is drawn as a dashed line.

    Args:
        curves: curve files (or their loaded contents).
        output: the file to write (``.png``, ``.pdf`` or ``.svg``).
        metric: the metric to plot (default: the first curve's ``primary_metric``, or
            ``psnr-rgb`` for files without one).
        title: plot title (default: the task names and the metric).
        show_reference: draw the uncompressed reference lines.
        dpi: resolution of PNG output.
        bd_rate_against_first: add to each other curve's legend entry its BD-rate
            (pchip) against the first curve on this metric, where they overlap.
    """
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, leaves the user's backend alone

    fmt = plot_format(output)
    loaded: List[Mapping[str, Any]] = [c if isinstance(c, Mapping) else load_curve(c) for c in curves]
    names = [str(c) if not isinstance(c, Mapping) else c.get("name", "?") for c in curves]
    if not loaded:
        raise ValueError("nothing to plot: no curve files given")
    metric = metric or loaded[0].get("primary_metric") or "psnr-rgb"
    fig = Figure(figsize=(6.4, 4.8), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    references = _draw_curves(ax, loaded, names, metric, bd_rate_against_first)
    if show_reference:
        _draw_references(ax, references)
    ax.set_xlabel(axis_label("bpp"))
    ax.set_ylabel(axis_label(metric, loaded[0]))
    tasks = sorted({str(c["task"]) for c in loaded if c.get("task")})
    default_title = f"{metric_title(metric)} vs rate" + (f" ({', '.join(tasks)})" if tasks else "")
    any_random = any(c.get("random_weights") for c in loaded)
    ax.set_title((title or default_title) + ("\nRANDOM WEIGHTS: not meaningful" if any_random else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt)
    path = atomic_write_bytes(output, buffer.getvalue())
    logger.info("wrote %s", path)
    return path


def _draw_curves(
    ax: Any, curves: Sequence[Mapping[str, Any]], names: Sequence[str], metric: str, bd_rate_against_first: bool
) -> List[Tuple[float, Any, bool]]:
    """One line per curve (its points sorted by rate, non-finite ones left out); returns
    the distinct uncompressed references ``(value, task, random)``, in order of appearance."""
    references: Dict[Tuple[float, Any, bool], None] = {}
    for i, (curve, source) in enumerate(zip(curves, names)):
        ys = curve_values(curve, metric, source)
        xs = [math.nan if v is None else float(v) for v in curve["results"]["bpp"]]
        points = sorted((x, y) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y))
        random = bool(curve.get("random_weights"))
        label = str(curve.get("name", source)) + (" [RANDOM WEIGHTS]" if random else "")
        if bd_rate_against_first and i > 0:
            label += _bd_note(curves[0], curve, metric)
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker=_MARKERS[i % len(_MARKERS)],
            linestyle=_LINES[i % len(_LINES)],
            label=label,
        )
        ref = (curve.get("reference") or {}).get(metric)
        if ref is not None and math.isfinite(float(ref)):
            references.setdefault((round(float(ref), 6), curve.get("task"), random), None)
    if bd_rate_against_first:
        warn_of_falling_curves(curves, metric)
    return list(references)


def _draw_references(ax: Any, references: Sequence[Tuple[float, Any, bool]]) -> None:
    """A dashed horizontal line per uncompressed reference (one per task network)."""
    for j, (value, task, random) in enumerate(references):
        label = f"uncompressed ({task})" if task else "uncompressed"
        ax.axhline(
            value,
            color="0.35",
            linestyle=("--", ":", "-.")[j % 3],
            linewidth=1.2,
            label=label + (" [RANDOM WEIGHTS]" if random else ""),
        )


def _bd_note(anchor: Mapping[str, Any], curve: Mapping[str, Any], metric: str) -> str:
    """`` (BD-rate -12.3 % vs anchor)``, or why there is none."""
    value = curve_bd_rate(anchor, curve, metric)
    if value is None:
        return " (no BD-rate: no common range of the metric)"
    return f" (BD-rate {value:+.1f} % vs {anchor.get('name', 'first')})"
