"""Result files: CompressAI-style JSON curves and a CSV table, written atomically.

A curve file holds one codec curve on one task::

    {
      "name": "transtic",
      "description": "...",
      "task": "det",
      "primary_metric": "bbox-AP",
      "metric_names": ["bbox-AP", ...],
      "units": {"bpp": "bits per pixel", "psnr-rgb": "dB", "bbox-AP": "%", ...},
      "random_weights": false,
      "num_images": 5000,
      "reference": {"bbox-AP": 37.0, ...},
      "results": {"quality": [1, 2, 3, 4], "bpp": [...], "bpp-likelihood": [...],
                  "psnr-rgb": [...], "bbox-AP": [...], ...}
    }

``name``, ``description`` and ``results`` (lists, one entry per rate point, ``bpp``
included) follow ``compressai.utils.eval_model``, so CompressAI's plotting tool reads
these files too. ``reference`` holds the task metrics on uncompressed images.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from ..console import shorten
from ..fileio import atomic_write_bytes, atomic_write_text
from .records import as_number

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "axis_label",
    "curve_values",
    "load_curve",
    "metric_title",
    "to_json_value",
    "write_csv",
    "write_json",
]


def to_json_value(value: Any) -> Any:
    """Replace non-finite floats (NaN, inf) by ``None`` so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    return value


def write_json(path: Union[str, Path], obj: Mapping[str, Any]) -> Path:
    """Write a JSON document atomically (non-finite numbers become ``null``)."""
    return atomic_write_text(path, json.dumps(to_json_value(obj), indent=2) + "\n")


def write_csv(path: Union[str, Path], rows: Sequence[Mapping[str, Any]], columns: Iterable[str]) -> Path:
    """Write rows as CSV atomically; missing cells are left empty, NaN as empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in row.items()}
        )
    return atomic_write_text(path, buffer.getvalue())


def load_curve(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a curve file (ours or ``compressai.utils.eval_model``'s) and check its shape.

    Raises:
        ValueError: not a JSON object with ``results`` lists of equal length including
            ``bpp``, or a field of the wrong type (the message names the file and field).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (ValueError, RecursionError) as err:  # not JSON (or not UTF-8), nested too deep, too many digits
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict) or "bpp" not in results:
        raise ValueError(f"{path} is not a results file: expected an object with a 'results' mapping holding 'bpp'")
    problem = _curve_problem(data)
    if problem:
        raise ValueError(f"{path}: {problem}")
    lengths = {k: len(v) for k, v in results.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{path}: the result lists have different lengths {lengths}")
    data.setdefault("name", path.stem)
    return data


def _is_number(value: Any) -> bool:
    return as_number(value) is not None


def _curve_problem(data: Mapping[str, Any]) -> Optional[str]:
    """What is wrong with the fields of a curve file, or ``None``."""
    for key, values in data["results"].items():
        if not isinstance(values, list):
            return f"results[{key!r}] is a {type(values).__name__}, not a list"
        wanted, test = ("integers", lambda v: isinstance(v, int)) if key == "quality" else ("numbers", _is_number)
        bad = [v for v in values if v is not None and (isinstance(v, bool) or not test(v))]
        if bad:
            return f"results[{key!r}] holds {shorten(str(bad[0]), 40)!r}; expected {wanted} or null"
    for key in ("name", "description", "task", "primary_metric", "rate_average"):
        if key in data and not isinstance(data[key], str):
            return f"{key!r} is a {type(data[key]).__name__}, not a string"
    if "random_weights" in data and not isinstance(data["random_weights"], bool):
        return f"'random_weights' is {data['random_weights']!r}, not true or false"
    for key, check, wanted in (
        ("units", lambda v: isinstance(v, str), "a string"),
        ("reference", _is_number, "a number"),
    ):
        table = data.get(key, {})
        if not isinstance(table, dict):
            return f"{key!r} is a {type(table).__name__}, not an object"
        bad_keys = [k for k, v in table.items() if not (check(v) or (key == "reference" and v is None))]
        if bad_keys:
            return f"{key}[{bad_keys[0]!r}] is not {wanted}"
    names = data.get("metric_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return "'metric_names' is not a list of strings"
    return None


def curve_values(curve: Mapping[str, Any], metric: str, path: Union[str, Path] = "") -> List[float]:
    """The values of ``metric`` in a curve (``None`` -> NaN), or a clear error."""
    results = curve["results"]
    if metric not in results:
        raise ValueError(f"{path or curve.get('name')}: no metric {metric!r}; available: {', '.join(sorted(results))}")
    return [math.nan if v is None else float(v) for v in results[metric]]


_TITLES = {
    "top1": "top-1 accuracy",
    "top5": "top-5 accuracy",
    "psnr-rgb": "PSNR (RGB)",
    "ms-ssim-rgb": "MS-SSIM (RGB)",
    "bpp": "rate",
    "bpp-likelihood": "rate (likelihoods)",
    "encoding_time": "encoding time",
    "decoding_time": "decoding time",
}
_AP_KINDS = {"": "AP", "50": "AP50", "75": "AP75", "s": "AP (small)", "m": "AP (medium)", "l": "AP (large)"}
#: units of metrics whose files do not say (CompressAI's eval_model files)
_UNITS = {
    "psnr-rgb": "dB",
    "ms-ssim-rgb": "",
    "bpp": "bpp",
    "bpp-likelihood": "bpp",
    "encoding_time": "s",
    "decoding_time": "s",
}


def metric_title(metric: str) -> str:
    """A metric's name for readers: ``top1`` -> ``top-1 accuracy``, ``bbox-AP50`` -> ``box AP50``."""
    if metric in _TITLES:
        return _TITLES[metric]
    match = re.fullmatch(r"(bbox|segm)-AP(50|75|s|m|l)?", metric)
    if match:
        return f"{'box' if match.group(1) == 'bbox' else 'mask'} {_AP_KINDS[match.group(2) or '']}"
    return metric


def metric_unit(metric: str, curve: Optional[Mapping[str, Any]] = None) -> str:
    """The unit of a metric: the curve file's, else the known ones, else percent."""
    unit = (curve or {}).get("units", {}).get(metric)
    if unit is None:
        unit = _UNITS.get(metric, "%")
    return "" if unit.startswith("1 ") else unit  # "1 (fraction)": no unit to print


def axis_label(metric: str, curve: Optional[Mapping[str, Any]] = None) -> str:
    """An axis or column label: the metric's readable name and its unit."""
    unit = metric_unit(metric, curve)
    return f"{metric_title(metric)} [{unit}]" if unit else metric_title(metric)
