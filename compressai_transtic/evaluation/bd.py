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
import warnings
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from ..console import and_more
from ..strenum import StrEnum, parse_choice
from .results import curve_source, curve_values, missing_values, printable

__all__ = [
    "BDAxis",
    "BDMethod",
    "LOW_OVERLAP",
    "METHODS",
    "bd_metric",
    "bd_rate",
    "curve_bd_rate",
    "curve_points",
    "falling_steps",
    "overlap_share",
    "warn_of_falling_curves",
]

logger = logging.getLogger(__name__)


class BDMethod(StrEnum):
    """How a BD delta interpolates the curves."""

    #: piecewise cubic Hermite interpolation (monotone; the default)
    PCHIP = "pchip"
    #: Bjontegaard's cubic polynomial fit
    CUBIC = "cubic"


class BDAxis(StrEnum):
    """The variable a BD delta integrates over."""

    #: the metric (BD-rate: the rate difference at equal metric)
    METRIC = "metric"
    #: the log rate (BD-metric: the metric difference at equal rate)
    RATE = "rate"


#: the values of :class:`BDMethod`
METHODS = BDMethod.values()
#: below this overlap share a BD delta extrapolates most of a curve's range away
LOW_OVERLAP = 0.5


#: the fewest points per curve that each interpolation needs
_MIN_POINTS = {BDMethod.PCHIP: 2, BDMethod.CUBIC: 4}
Names = Tuple[str, str]
_NAMES: Names = ("the anchor curve", "the test curve")
#: polyfit's warning of a rank-deficient fit (in numpy.exceptions from numpy 2)
_RankWarning = getattr(getattr(np, "exceptions", None), "RankWarning", None) or np.RankWarning


def _curve(rate: Sequence[float], metric: Sequence[float], name: str, fewest: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rate, dtype=np.float64)
    m = np.asarray(metric, dtype=np.float64)
    if r.ndim != 1 or r.shape != m.shape:
        raise ValueError(f"{name}: rates and metrics must be 1-D sequences of the same length")
    if len(r) < fewest:
        method = "the cubic BD fit needs" if fewest == _MIN_POINTS[BDMethod.CUBIC] else "BD needs"
        points = "1 point" if len(r) == 1 else f"{len(r)} points"
        raise ValueError(f"{name} has {points}; {method} at least {fewest} points per curve")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(m))):
        raise ValueError(f"{name} has non-finite values")
    if np.any(r <= 0):
        raise ValueError(f"{name} has non-positive rates; BD needs rates > 0")
    return np.log(r), m


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{what} is not a finite number: the values are too large for floating point")
    return value


def _integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: BDMethod, what: str, axis: BDAxis) -> float:
    """Integral over [lo, hi] of the interpolation of y(x) (``x``: values of ``axis``)."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    repeated = np.flatnonzero(np.diff(xs) <= 0)
    if len(repeated):
        _, quantity, other, show, unit = _AXES[axis]
        value = show(xs[repeated[0]])
        raise ValueError(
            f"{what} has {quantity} {value:g}{unit} at two points; BD reads {other} as a function of "
            f"{quantity}, so it needs a different value at every point"
        )
    if method is BDMethod.CUBIC:
        with warnings.catch_warnings():
            warnings.simplefilter("error", _RankWarning)
            try:
                poly = np.polyint(np.polyfit(xs, ys, 3))
            except (_RankWarning, np.linalg.LinAlgError):
                raise ValueError(f"the cubic fit of {what} is ill-conditioned; use the pchip method") from None
        return _finite(float(np.polyval(poly, hi) - np.polyval(poly, lo)), f"the integral of {what}")
    from scipy.interpolate import PchipInterpolator  # scipy is heavy: imported for pchip only

    try:
        integral = float(PchipInterpolator(xs, ys).integrate(lo, hi))
    except ValueError:  # scipy refuses slopes beyond floating point
        integral = math.nan
    return _finite(integral, f"the integral of {what}")


#: per interpolation variable: its name in messages, the quantity, the other one, how
#: values are shown (from the variable) and their unit
_AXES: Dict[BDAxis, Tuple[str, str, str, Callable[[float], float], str]] = {
    BDAxis.METRIC: ("metric", "the metric", "the rate", float, ""),
    BDAxis.RATE: ("rate", "the rate", "the metric", math.exp, " bpp"),
}


def _span(values: np.ndarray, axis: BDAxis) -> str:
    """``61 to 73.4`` (``0.12 to 0.66 bpp`` for log-rates), ``0 at every point`` when constant."""
    _, _, _, show, unit = _AXES[axis]
    low, high = show(values.min()), show(values.max())
    return f"{low:g}{unit} at every point" if low == high else f"{low:g} to {high:g}{unit}"


def _check_varies(anchor: np.ndarray, test: np.ndarray, axis: BDAxis, names: Names, delta: str) -> None:
    """Refuse curves whose interpolation variable (``axis``) has one value at every point,
    naming each such curve with its value: a delta reads the other variable as a
    function of this one."""
    constant = [(name, _span(x, axis)) for name, x in zip(names, (anchor, test)) if x.min() == x.max()]
    if not constant:
        return
    _, quantity, other, _, _ = _AXES[axis]
    if len(constant) == 1:
        subject = f"{quantity} of {constant[0][0]} is constant ({constant[0][1]})"
    else:
        subject = f"{quantity} is constant on both curves ({'; '.join(f'{n}: {v}' for n, v in constant)})"
    raise ValueError(f"{subject}: {delta} reads {other} as a function of {quantity}, which must vary between points")


def _overlap(a: np.ndarray, b: np.ndarray, axis: BDAxis, names: Names) -> Tuple[float, float]:
    """The interval of ``axis`` that the anchor's values ``a`` and the test's ``b`` share.

    Raises:
        ValueError: they share none; the message gives each curve's range with its name.
    """
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    if not hi > lo:
        raise ValueError(
            f"the two curves do not overlap in {_AXES[axis][0]}: {names[0]} spans {_span(a, axis)}, "
            f"{names[1]} spans {_span(b, axis)}"
        )
    _finite(float(hi) - float(lo), f"the width of the shared {_AXES[axis][0]} range")
    return float(lo), float(hi)


def overlap_share(
    rate_anchor: Sequence[float],
    metric_anchor: Sequence[float],
    rate_test: Sequence[float],
    metric_test: Sequence[float],
    axis: BDAxis = BDAxis.METRIC,
) -> float:
    """Share (0..1) of the curves that the interval of a BD delta covers.

    Args:
        rate_anchor, metric_anchor, rate_test, metric_test: the two curves.
        axis: a :class:`BDAxis` (or its value): ``metric``, the interval of BD-rate, or
            ``rate``, the (log-rate) interval of BD-metric.

    Returns:
        ``min(|I| / range(anchor), |I| / range(test))`` with ``I`` the shared interval;
        0 when the curves do not overlap, 1 for a curve with a single value inside it.
    """
    la, ma = _curve(rate_anchor, metric_anchor, _NAMES[0])
    lt, mt = _curve(rate_test, metric_test, _NAMES[1])
    a, b = (ma, mt) if parse_choice(BDAxis, axis, "BD axis") is BDAxis.METRIC else (la, lt)
    with np.errstate(all="ignore"):
        shared = min(a.max(), b.max()) - max(a.min(), b.min())
        if shared <= 0:
            return 0.0
        share = float(min(shared / (c.max() - c.min()) if c.max() > c.min() else 1.0 for c in (a, b)))
    return share if math.isfinite(share) else 0.0


def _average_gap(
    anchor: Tuple[np.ndarray, np.ndarray],
    test: Tuple[np.ndarray, np.ndarray],
    method: BDMethod,
    axis: BDAxis,
    names: Names,
    delta: str,
) -> float:
    """Mean of ``y_test - y_anchor`` over the shared range of ``x`` (``axis``), for curves
    given as ``(x, y)`` (numpy's warnings kept quiet)."""
    with np.errstate(all="ignore"):
        _check_varies(anchor[0], test[0], axis, names, delta)
        lo, hi = _overlap(anchor[0], test[0], axis, names)
        ia = _integral(*anchor, lo, hi, method, names[0], axis)
        it = _integral(*test, lo, hi, method, names[1], axis)
        return _finite((it - ia) / (hi - lo), "the average difference of the curves")


def _curves(
    anchor: Tuple[Sequence[float], Sequence[float]],
    test: Tuple[Sequence[float], Sequence[float]],
    method: BDMethod,
    names: Names,
) -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    fewest = _MIN_POINTS[method]
    return _curve(*anchor, names[0], fewest), _curve(*test, names[1], fewest)


def _method(method: object) -> BDMethod:
    """``method`` as a :class:`BDMethod`, or the error naming the methods."""
    if method not in METHODS:
        raise ValueError(f"unknown BD method {method!r}; choose one of {METHODS}")
    return BDMethod(method)


def bd_rate(
    rate_anchor: Sequence[float],
    metric_anchor: Sequence[float],
    rate_test: Sequence[float],
    metric_test: Sequence[float],
    method: BDMethod = BDMethod.PCHIP,
    names: Names = _NAMES,
) -> float:
    """BD-rate of the test curve against the anchor, in percent.

    Args:
        rate_anchor: anchor rates (e.g. bpp), positive.
        metric_anchor: anchor metric values (PSNR, top-1, AP, ...), higher is better.
        rate_test: test rates.
        metric_test: test metric values.
        method: a :class:`BDMethod` (or its value), ``pchip`` by default.
        names: what the messages call the anchor and the test curve (their files).

    Returns:
        Average rate difference at equal metric, percent (negative: savings).

    Raises:
        ValueError: no BD-rate exists (too few, repeated or non-finite points, no
            overlap, a result beyond floating point); the message says why.
    """
    method = _method(method)
    (la, ma), (lt, mt) = _curves((rate_anchor, metric_anchor), (rate_test, metric_test), method, names)
    gap = _average_gap((ma, la), (mt, lt), method, BDAxis.METRIC, names, "BD-rate")
    try:
        return _finite((math.exp(gap) - 1.0) * 100.0, "the BD-rate")
    except OverflowError:
        raise ValueError(
            f"BD-rate out of range: the test curve needs about e^{gap:.4g} times the anchor's rate, "
            "beyond floating point"
        ) from None


def bd_metric(
    rate_anchor: Sequence[float],
    metric_anchor: Sequence[float],
    rate_test: Sequence[float],
    metric_test: Sequence[float],
    method: BDMethod = BDMethod.PCHIP,
    names: Names = _NAMES,
) -> float:
    """BD-metric (e.g. BD-PSNR, BD-top-1) of the test curve against the anchor.

    Args:
        rate_anchor: anchor rates, positive.
        metric_anchor: anchor metric values.
        rate_test: test rates.
        metric_test: test metric values.
        method: a :class:`BDMethod` (or its value), ``pchip`` by default.
        names: what the messages call the anchor and the test curve (their files).

    Returns:
        Average metric difference (test - anchor) at equal rate, in the metric's unit.

    Raises:
        ValueError: no BD-metric exists; the message says why (as for :func:`bd_rate`).
    """
    method = _method(method)
    (la, ma), (lt, mt) = _curves((rate_anchor, metric_anchor), (rate_test, metric_test), method, names)
    return _average_gap((la, ma), (lt, mt), method, BDAxis.RATE, names, "BD-metric")


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
        steps = falling_steps(curve_values(curve, "bpp"), curve_values(curve, metric))
        if steps:
            falling.append(name)
            shown = "; ".join(f"{m0:g} at {r0:g} bpp to {m1:g} at {r1:g} bpp" for r0, m0, r1, m1 in steps[:3])
            more = and_more(steps, 3)
            logger.warning(
                "%s: %s falls as the rate rises (%s%s); BD-rate assumes a rising curve, so its value is unreliable",
                printable(name, 80),
                printable(metric, 40),
                shown,
                more,
            )
    return falling


def curve_points(curve: Mapping[str, Any], metric: str) -> Tuple[List[float], List[float]]:
    """The rates and ``metric`` values of a loaded curve file, for BD.

    Raises:
        ValueError: the curve lacks the metric, or a point has no value (the message
            names the file and the point).
    """
    missing = missing_values(curve, [metric])
    if missing:
        raise ValueError(f"{curve_source(curve)}: {missing[0]}{and_more(missing, 1)}; BD needs every point")
    return curve_values(curve, "bpp"), curve_values(curve, metric)


def curve_bd_rate(
    anchor: Mapping[str, Any], test: Mapping[str, Any], metric: str, method: BDMethod = BDMethod.PCHIP
) -> float:
    """BD-rate (%) of two loaded curve files on ``metric``.

    Raises:
        ValueError: why there is none (no common range, too few points, a point without
            a value...), naming the files.
    """
    ra, ma = curve_points(anchor, metric)
    rt, mt = curve_points(test, metric)
    return bd_rate(ra, ma, rt, mt, method, names=(curve_source(anchor), curve_source(test)))
