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
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Union

from ..fileio import atomic_write_bytes, atomic_write_text

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "curve_values",
    "load_curve",
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
        writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in row.items()})
    return atomic_write_text(path, buffer.getvalue())


def load_curve(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a curve file (ours or ``compressai.utils.eval_model``'s) and check its shape.

    Raises:
        ValueError: not a JSON object with ``results`` lists of equal length including ``bpp``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict) or "bpp" not in results:
        raise ValueError(f"{path} is not a results file: expected an object with a 'results' mapping holding 'bpp'")
    lengths = {k: len(v) for k, v in results.items() if isinstance(v, list)}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{path}: the result lists have different lengths {lengths}")
    data.setdefault("name", path.stem)
    return data


def curve_values(curve: Mapping[str, Any], metric: str, path: Union[str, Path] = "") -> List[float]:
    """The values of ``metric`` in a curve (``None`` -> NaN), or a clear error."""
    results = curve["results"]
    if metric not in results:
        raise ValueError(
            f"{path or curve.get('name')}: no metric {metric!r}; available: {', '.join(sorted(results))}"
        )
    return [math.nan if v is None else float(v) for v in results[metric]]
