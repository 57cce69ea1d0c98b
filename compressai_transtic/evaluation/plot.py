"""Rate-accuracy plots (PNG, PDF or SVG, rendered by matplotlib without pyplot) of one or more curve files."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .bd import curve_bd_rate, warn_of_falling_curves
from .results import (
    atomic_write_bytes,
    axis_label,
    check_comparable,
    curve_source,
    curve_values,
    load_curve,
    metric_title,
    printable,
    random_label,
    random_parts,
    warn_of_missing_values,
)

__all__ = ["DPI_RANGE", "FORMATS", "axis_label", "check_dpi", "default_metric", "plot_curves", "plot_format"]

logger = logging.getLogger(__name__)

#: output formats, by file extension
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
#: one marker and line style per curve, so curves stay apart in print and in grey
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINES = ("-", "--", "-.", ":")
#: the resolutions a plot may have: at 1200 dpi a figure is 7680 x 5760 pixels
DPI_RANGE = (10, 1200)
#: the figure's size in inches
_FIGSIZE = (6.4, 4.8)


def check_dpi(dpi: object) -> int:
    """``dpi`` when it is an integer in :data:`DPI_RANGE`.

    Raises:
        ValueError: anything else (the message names the ``--dpi`` option).
    """
    low, high = DPI_RANGE
    if not isinstance(dpi, int) or isinstance(dpi, bool) or not low <= dpi <= high:
        raise ValueError(
            f"--dpi {printable(dpi, 40)}: the resolution must be an integer from {low} to {high} "
            f"(at {high} dpi the plot is {round(_FIGSIZE[0] * high)} x {round(_FIGSIZE[1] * high)} pixels)"
        )
    return dpi


def _text(text: object) -> str:
    """User text for a label or title: escaped (control characters, lone surrogates)
    and with ``$`` shown as such rather than starting matplotlib's math mode."""
    return printable(text).replace("$", r"\$")


def _legend_label(text: object) -> str:
    """A legend entry: matplotlib hides labels that start with ``_``, so they get a space."""
    label = _text(text)
    return " " + label if label.startswith("_") else label


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

    A curve whose plotted values come from random weights is labelled with what is
    random, "[RANDOM WEIGHTS: codec]", "[RANDOM WEIGHTS: task network]" (a task metric of
    a random network; not its rate or PSNR) or both (:func:`~.results.random_parts`);
    "[RANDOM WEIGHTS]" for files that do not say which. The uncompressed reference
    accuracy of each distinct task network is drawn as a dashed line.
    Names and titles are drawn as written (``$`` does not start math mode); points
    without a value are left out, with a warning naming the file and the point.

    Args:
        curves: curve files (or their loaded contents).
        output: the file to write (``.png``, ``.pdf`` or ``.svg``).
        metric: the metric to plot (default: the first curve's ``primary_metric``, or
            ``psnr-rgb`` for files without one).
        title: plot title (default: the task names and the metric).
        show_reference: draw the uncompressed reference lines.
        dpi: resolution of PNG output, an integer in :data:`DPI_RANGE`.
        bd_rate_against_first: add to each other curve's legend entry its BD-rate
            (pchip) against the first curve on this metric, or why there is none.

    Raises:
        ValueError: a bad ``dpi`` or extension, a curve without ``metric``, or curves
            whose unit of ``metric`` or rate averaging differs from the first's.
    """
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, leaves the user's backend alone

    fmt = plot_format(output)
    check_dpi(dpi)
    loaded: List[Mapping[str, Any]] = [c if isinstance(c, Mapping) else load_curve(c) for c in curves]
    if not loaded:
        raise ValueError("nothing to plot: no curve files given")
    metric = metric or default_metric(loaded)
    check_comparable(loaded, [metric])
    fig = Figure(figsize=_FIGSIZE, dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    references = _draw_curves(ax, loaded, metric, bd_rate_against_first)
    if show_reference:
        _draw_references(ax, references)
    _label(ax, loaded, metric, title, show_reference)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt)
    path = atomic_write_bytes(output, buffer.getvalue())
    logger.info("wrote %s", path)
    return path


def _label(ax: Any, curves: Sequence[Mapping[str, Any]], metric: str, title: Optional[str], reference: bool) -> None:
    """Axis labels, the title (with what is random in the plotted values), grid and legend."""
    ax.set_xlabel(_text(axis_label("bpp")))
    ax.set_ylabel(_text(axis_label(metric, curves[0])))
    tasks = sorted({str(c["task"]) for c in curves if c.get("task")})
    default_title = f"{metric_title(metric)} vs rate" + (f" ({', '.join(tasks)})" if tasks else "")
    ax.set_title(_text(title or default_title) + _random_note(curves, metric, reference))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")


def default_metric(curves: Sequence[Mapping[str, Any]]) -> str:
    """The metric plotted when none is asked for: the first curve's primary metric, else PSNR."""
    return str(curves[0].get("primary_metric") or "psnr-rgb")


def _random_note(curves: Sequence[Mapping[str, Any]], metric: str, show_reference: bool) -> str:
    """The title's second line when something plotted comes from random weights (the
    legend says what)."""
    random = any(random_parts(c, [metric]) for c in curves)
    reference = show_reference and any(random_parts(c, [metric], coded=False) for c in curves)
    return "\nRANDOM WEIGHTS: not meaningful" if random or reference else ""


def _draw_curves(
    ax: Any, curves: Sequence[Mapping[str, Any]], metric: str, bd_rate_against_first: bool
) -> List[Tuple[float, Any, str]]:
    """One line per curve (its points sorted by rate; points without a value are left
    out, with a warning); returns the distinct uncompressed references ``(value, task,
    random label)``, in order of appearance."""
    references: Dict[Tuple[float, Any, str], None] = {}
    for i, curve in enumerate(curves):
        ys = curve_values(curve, metric)
        xs = curve_values(curve, "bpp")
        points = sorted((x, y) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y))
        random = random_label(random_parts(curve, [metric]))
        label = str(curve.get("name", "?")) + (f" [{random}]" if random else "")
        if bd_rate_against_first and i > 0:
            label += _bd_note(curves[0], curve, metric)
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker=_MARKERS[i % len(_MARKERS)],
            linestyle=_LINES[i % len(_LINES)],
            label=_legend_label(label),
        )
        ref = (curve.get("reference") or {}).get(metric)
        if ref is not None and math.isfinite(float(ref)):
            reference_random = random_label(random_parts(curve, [metric], coded=False))
            references.setdefault((round(float(ref), 6), curve.get("task"), reference_random), None)
    warn_of_missing_values(curves, [metric], "is left out of the plot")
    if bd_rate_against_first:
        warn_of_falling_curves(curves, metric)
    return list(references)


def _draw_references(ax: Any, references: Sequence[Tuple[float, Any, str]]) -> None:
    """A dashed horizontal line per uncompressed reference (one per task network)."""
    for j, (value, task, random) in enumerate(references):
        label = f"uncompressed ({_text(task)})" if task else "uncompressed"
        ax.axhline(
            value,
            color="0.35",
            linestyle=("--", ":", "-.")[j % 3],
            linewidth=1.2,
            label=label + (f" [{random}]" if random else ""),
        )


def _bd_note(anchor: Mapping[str, Any], curve: Mapping[str, Any], metric: str) -> str:
    """`` (BD-rate -12.3 % vs anchor)``, or why there is none (in full on stderr)."""
    try:
        value = curve_bd_rate(anchor, curve, metric)
    except ValueError as err:
        source, first = curve_source(curve), curve_source(anchor)
        logger.warning("no BD-rate for %s against %s: %s", source, first, err)
        reason = str(err).replace(source, "this curve").replace(first, "the first curve")
        return f" (no BD-rate: {printable(reason, 110)})"
    return f" (BD-rate {value:+.1f} % vs {printable(anchor.get('name', 'first'), 40)})"
