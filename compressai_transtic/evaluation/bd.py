"""Bjontegaard delta rate (BD-rate) and delta metric (BD-metric) between two curves.

Both compare a test curve against an anchor over the range where they overlap:

- BD-rate: the average difference of ``log(rate)`` as a function of the metric,
  integrated over the overlapping metric interval, reported as
  ``(exp(avg) - 1) * 100`` percent (negative: the test curve needs fewer bits for the
  same accuracy).
- BD-metric: the average difference of the metric as a function of ``log(rate)`` over
  the overlapping log-rate interval (positive: the test curve is more accurate at the
  same rate).

Two interpolations are offered:

- ``"pchip"`` (default): piecewise cubic Hermite interpolation through the points
  (``scipy.interpolate.PchipInterpolator``), the newer practice of JVET's
  common test conditions; it needs 2 points or more and follows the points exactly.
- ``"cubic"``: the original formulation (VCEG-M33): a least-squares cubic polynomial
  fit, which needs 4 points or more.

For both, a curve compared with itself gives exactly 0, and a curve whose rates are all
``s`` times the anchor's (same metrics) gives a BD-rate of ``(s - 1) * 100`` %.

A delta only describes the interval the two curves share. :func:`overlap_share` says
how much of the curves that interval is: the smaller of the two fractions of each
curve's own range (metric range for BD-rate, log-rate range for BD-metric) that it
covers. ``compare`` prints it and warns below :data:`LOW_OVERLAP`.

BD-rate reads each curve's rate as a function of its metric, so it assumes a metric
that rises with the rate. Where a curve's metric falls from one rate point to the next
(a noisy accuracy curve, or a model past its useful range), the interpolation still
succeeds but pairs rates with the wrong metric values. :func:`falling_steps` finds those
steps; ``compare``, ``table`` and ``plot --bd-rate`` warn of them rather than refuse,
as such curves are common in the field and their BD-rate is still often reported.
"""

from __future__ import annotations

import logging
import math
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..console import and_more
from .results import curve_values

__all__ = [
    "LOW_OVERLAP",
    "METHODS",
    "bd_metric",
    "bd_rate",
    "curve_bd_rate",
    "falling_steps",
    "overlap_share",
    "warn_of_falling_curves",
]

logger = logging.getLogger(__name__)

METHODS = ("pchip", "cubic")
#: below this overlap share a BD delta extrapolates most of a curve's range away
LOW_OVERLAP = 0.5


def _curve(rate: Sequence[float], metric: Sequence[float], name: str) -> Tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rate, dtype=np.float64)
    m = np.asarray(metric, dtype=np.float64)
    if r.ndim != 1 or r.shape != m.shape:
        raise ValueError(f"{name} curve: rates and metrics must be 1-D sequences of the same length")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(m))):
        raise ValueError(f"{name} curve has non-finite values")
    if np.any(r <= 0):
        raise ValueError(f"{name} curve has non-positive rates; BD needs rates > 0")
    return np.log(r), m


def _integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: str, what: str) -> float:
    """Integral over [lo, hi] of the interpolation of y(x)."""
    if method == "cubic":
        if len(x) < 4:
            raise ValueError(f"the cubic BD fit needs at least 4 points per curve, {what} has {len(x)}")
        poly = np.polyint(np.polyfit(x, y, 3))
        return float(np.polyval(poly, hi) - np.polyval(poly, lo))
    if method == "pchip":
        from scipy.interpolate import PchipInterpolator  # scipy is heavy: imported for pchip only

        if len(x) < 2:
            raise ValueError(f"BD needs at least 2 points per curve, {what} has {len(x)}")
        order = np.argsort(x, kind="stable")
        xs, ys = x[order], y[order]
        if np.any(np.diff(xs) <= 0):
            raise ValueError(f"{what} has repeated values of the interpolation variable; BD needs distinct points")
        return float(PchipInterpolator(xs, ys).integrate(lo, hi))
    raise ValueError(f"unknown BD method {method!r}; choose one of {METHODS}")


def _overlap(a: np.ndarray, b: np.ndarray, what: str) -> Tuple[float, float]:
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    if not hi > lo:
        raise ValueError(
            f"the two curves do not overlap in {what} ([{a.min():g}, {a.max():g}] vs [{b.min():g}, {b.max():g}])"
        )
    return float(lo), float(hi)


def overlap_share(
    rate_anchor: Sequence[float],
    metric_anchor: Sequence[float],
    rate_test: Sequence[float],
    metric_test: Sequence[float],
    axis: str = "metric",
) -> float:
    """Share (0..1) of the curves that the interval of a BD delta covers.

    Args:
        rate_anchor, metric_anchor, rate_test, metric_test: the two curves.
        axis: ``"metric"`` (the interval of BD-rate) or ``"rate"`` (log-rate, BD-metric).

    Returns:
        ``min(|I| / range(anchor), |I| / range(test))`` with ``I`` the shared interval;
        0 when the curves do not overlap, 1 for a curve with a single value inside it.
    """
    la, ma = _curve(rate_anchor, metric_anchor, "anchor")
    lt, mt = _curve(rate_test, metric_test, "test")
    a, b = (ma, mt) if axis == "metric" else (la, lt)
    shared = min(a.max(), b.max()) - max(a.min(), b.min())
    if shared <= 0:
        return 0.0
    return float(min(shared / (c.max() - c.min()) if c.max() > c.min() else 1.0 for c in (a, b)))


def bd_rate(
    rate_anchor: Sequence[float],
    metric_anchor: Sequence[float],
    rate_test: Sequence[float],
    metric_test: Sequence[float],
    method: str = "pchip",
) -> float:
    """BD-rate of the test curve against the anchor, in percent.

    Args:
        rate_anchor: anchor rates (e.g. bpp), positive.
        metric_anchor: anchor metric values (PSNR, top-1, AP, ...), higher is better.
        rate_test: test rates.
        metric_test: test metric values.
        method: ``"pchip"`` (default) or ``"cubic"``.

    Returns:
        Average rate difference at equal metric, percent (negative: savings).
    """
    la, ma = _curve(rate_anchor, metric_anchor, "anchor")
    lt, mt = _curve(rate_test, metric_test, "test")
    lo, hi = _overlap(ma, mt, "metric")
    ia = _integral(ma, la, lo, hi, method, "the anchor curve")
    it = _integral(mt, lt, lo, hi, method, "the test curve")
    return (math.exp((it - ia) / (hi - lo)) - 1.0) * 100.0


def bd_metric(
    rate_anchor: Sequence[float],
    metric_anchor: Sequence[float],
    rate_test: Sequence[float],
    metric_test: Sequence[float],
    method: str = "pchip",
) -> float:
    """BD-metric (e.g. BD-PSNR, BD-top-1) of the test curve against the anchor.

    Args:
        rate_anchor: anchor rates, positive.
        metric_anchor: anchor metric values.
        rate_test: test rates.
        metric_test: test metric values.
        method: ``"pchip"`` (default) or ``"cubic"``.

    Returns:
        Average metric difference (test - anchor) at equal rate, in the metric's unit.
    """
    la, ma = _curve(rate_anchor, metric_anchor, "anchor")
    lt, mt = _curve(rate_test, metric_test, "test")
    lo, hi = _overlap(la, lt, "log-rate")
    ia = _integral(la, ma, lo, hi, method, "the anchor curve")
    it = _integral(lt, mt, lo, hi, method, "the test curve")
    return (it - ia) / (hi - lo)


def falling_steps(rate: Sequence[float], metric: Sequence[float]) -> List[Tuple[float, float, float, float]]:
    """The steps between consecutive points, in rate order, over which the metric falls.

    Returns:
        ``(rate_from, metric_from, rate_to, metric_to)`` for each such step; empty for a
        curve whose metric never falls as the rate rises (equal metrics are not a fall).
        Points with a non-finite rate or metric are left out.
    """
    points = sorted((float(r), float(m)) for r, m in zip(rate, metric) if math.isfinite(r) and math.isfinite(m))
    return [(r0, m0, r1, m1) for (r0, m0), (r1, m1) in zip(points, points[1:]) if m1 < m0]


def warn_of_falling_curves(curves: Sequence[Mapping[str, Any]], metric: str) -> List[str]:
    """Log a warning for each loaded curve file whose ``metric`` falls as its rate
    rises (see :func:`falling_steps`), as BD-rate assumes it does not.

    Returns:
        The names of the falling curves.
    """
    falling = []
    for curve in curves:
        name = str(curve.get("name", "?"))
        steps = falling_steps(curve_values(curve, "bpp", name), curve_values(curve, metric, name))
        if steps:
            falling.append(name)
            shown = "; ".join(f"{m0:g} at {r0:g} bpp to {m1:g} at {r1:g} bpp" for r0, m0, r1, m1 in steps[:3])
            more = and_more(steps, 3)
            logger.warning(
                "%s: %s falls as the rate rises (%s%s); BD-rate assumes a rising curve, so its value is unreliable",
                name,
                metric,
                shown,
                more,
            )
    return falling


def curve_bd_rate(anchor: Mapping[str, Any], test: Mapping[str, Any], metric: str) -> Optional[float]:
    """BD-rate (pchip, %) of two loaded curve files on ``metric``; ``None`` where their
    metric ranges do not overlap (or a curve has too few points)."""
    try:
        return bd_rate(
            curve_values(anchor, "bpp"),
            curve_values(anchor, metric),
            curve_values(test, "bpp"),
            curve_values(test, metric),
        )
    except ValueError:
        return None
