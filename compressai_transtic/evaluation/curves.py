"""Curves: the evaluator's per-image records aggregated into rate points.

A :class:`Curve` is one codec label on one task; each of its points averages the
records of one rate point (:class:`~.codecs.CodecSpec`) over the images. Rates are
averaged in one of two ways (:class:`RateAverage`): the mean of per-image bpp
(CompressAI's ``eval_model`` and the authors' evaluation; the default) or total bits
over total pixels (MPEG's common test conditions), which weights large images more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

from ..strenum import StrEnum, parse_choice
from ..tasks.base import Task
from .codecs import CodecSpec
from .results import random_parts_of

__all__ = ["Curve", "RateAverage", "coding_means", "point_order"]


class RateAverage(StrEnum):
    """How the bpp of a curve point averages its images."""

    #: mean of the per-image bpp (CompressAI's eval_model, the authors' evaluation)
    IMAGE = "image"
    #: total bits over total pixels (MPEG common test conditions)
    TOTAL = "total"

    def describe(self) -> str:
        return "bpp = mean of per-image bpp" if self is RateAverage.IMAGE else "bpp = total bits / total pixels"


#: the units of the coding columns; task metrics bring their own (percent by default)
CODING_UNITS = {
    "bpp": "bits per pixel",
    "bpp-likelihood": "bits per pixel",
    "psnr-rgb": "dB",
    "ms-ssim-rgb": "1 (fraction)",
    "encoding_time": "s",
    "decoding_time": "s",
}


@dataclass
class Curve:
    """One aggregated curve: a codec label on one task.

    Args:
        name: the codec label.
        task: the task.
        specs: its rate points.
        points: per point, ``quality``, ``bpp``, ``bpp-likelihood``, ``psnr-rgb`` and the
            task metrics (percent).
        reference: task metrics on the uncompressed images (empty if not evaluated).
        num_images: images per point.
        description: human description.
        rate_average: how ``bpp`` averages the images.
    """

    name: str
    task: Task
    specs: List[CodecSpec]
    points: List[Dict[str, Any]] = field(default_factory=list)
    reference: Dict[str, float] = field(default_factory=dict)
    num_images: int = 0
    description: str = ""
    rate_average: RateAverage = RateAverage.IMAGE

    def __post_init__(self) -> None:
        self.rate_average = parse_choice(RateAverage, self.rate_average, "rate average")

    @property
    def random_codec(self) -> bool:
        """Whether a codec of the curve has random weights: every value is meaningless."""
        return any(s.random_weights for s in self.specs)

    @property
    def random_task_network(self) -> bool:
        """Whether the task network has random weights: the task metrics and the
        reference are meaningless, the rate and fidelity (:data:`~.results.CODING_METRICS`) are not."""
        return bool(self.task.random_weights)

    @property
    def random_weights(self) -> bool:
        """Whether any value of the curve comes from random weights (codec or task network)."""
        return self.random_codec or self.random_task_network

    def random_parts(self, metrics: Sequence[str]) -> List[str]:
        """What is random behind the curve's values of ``metrics`` (:func:`~.results.random_parts_of`)."""
        return random_parts_of(self.random_codec, self.random_task_network, metrics)

    def sort_points(self) -> None:
        """Order the points as :func:`point_order` says, keeping each with its spec."""
        order = sorted(range(len(self.points)), key=lambda i: point_order(self.specs[i], self.points[i]))
        self.points = [self.points[i] for i in order]
        self.specs = [self.specs[i] for i in order]

    def to_json(self) -> Dict[str, Any]:
        """The curve in CompressAI's result format (plus ``task``, ``reference``...)."""
        metrics = list(self.task.metric_names)
        coding = ["bpp", "bpp-likelihood", "psnr-rgb", "ms-ssim-rgb"]
        keys = list(dict.fromkeys(["quality", *coding, *metrics, "encoding_time", "decoding_time"]))
        units = dict(CODING_UNITS)
        units.update({m: self.task.metric_units.get(m, "%") for m in metrics})
        return {
            "name": self.name,
            "description": self.description,
            "task": self.task.name,
            "primary_metric": self.task.primary_metric,
            "metric_names": metrics,
            "units": units,
            "random_weights": self.random_weights,
            "random_codec": self.random_codec,
            "random_task_network": self.random_task_network,
            "num_images": self.num_images,
            "rate_average": self.rate_average.value,
            "reference": dict(self.reference),
            "results": {k: [p.get(k) for p in self.points] for k in keys},
        }


def point_order(spec: CodecSpec, point: Dict[str, Any]) -> Tuple[Any, ...]:
    """Learned codecs by quality level; traditional ones (QPs run backwards) by rate."""
    if spec.traditional:
        return (False, point["bpp"], 0)
    return (point["quality"] is None, point["quality"] or 0, point["bpp"])


def _mean(values: Sequence[Any]) -> float:
    """The mean; NaN when empty or when a value is missing (``None``: e.g. records without that field)."""
    if not values or any(v is None for v in values):
        return math.nan
    return float(sum(values) / len(values))


def coding_means(spec: CodecSpec, records: Sequence[Dict[str, Any]], rate_average: RateAverage) -> Dict[str, Any]:
    """Rate, fidelity and times of one rate point, averaged over its images' records."""
    if parse_choice(RateAverage, rate_average, "rate average") is RateAverage.TOTAL:
        bpp = 8.0 * sum(r["bytes"] for r in records) / sum(r["pixels"] for r in records)
    else:
        bpp = _mean([r["bpp"] for r in records])
    return {
        "quality": spec.quality,
        "bpp": bpp,
        "bpp-likelihood": _mean([r["bpp_likelihood"] for r in records]),
        "psnr-rgb": _mean([r["psnr"] for r in records]),
        "ms-ssim-rgb": _mean([r.get("ms_ssim") for r in records]),
        "encoding_time": _mean([r.get("encoding_time") for r in records]),
        "decoding_time": _mean([r.get("decoding_time") for r in records]),
    }
