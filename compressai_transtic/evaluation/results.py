"""Result files: CompressAI-style JSON curves and a CSV table, written atomically.

A curve file holds one codec curve on one task::

    {
      "name": "transtic",
      "description": "...",
      "task": "det",
      "primary_metric": "bbox-AP",
      "metric_names": ["bbox-AP", ...],
      "units": {"bpp": "bits per pixel", "psnr-rgb": "dB", "bbox-AP": "%", ...},
      "random_weights": false, "random_codec": false, "random_task_network": false,
      "num_images": 5000,
      "reference": {"bbox-AP": 37.0, ...},
      "results": {"quality": [1, 2, 3, 4], "bpp": [...], "bpp-likelihood": [...],
                  "psnr-rgb": [...], "bbox-AP": [...], ...}
    }

``name``, ``description`` and ``results`` (lists, one entry per rate point, ``bpp``
included) follow ``compressai.utils.eval_model``, so CompressAI's plotting tool reads
these files too. ``reference`` holds the task metrics on uncompressed images.

``random_weights`` says that some values of the file come from randomly initialised
weights; ``random_codec`` and ``random_task_network`` say which: a random codec makes
every value meaningless, a random task network only the task metrics (and the
reference), not the rate, PSNR or MS-SSIM (:data:`CODING_METRICS`).
:func:`random_parts` reads them for the values shown, :func:`random_label` labels them.

:func:`load_curve` reads only a regular file of at most :data:`MAX_CURVE_BYTES` and
refuses a key given twice in one object. Text from a file (names, keys) goes into
messages through :func:`printable` / :func:`quoted`: shortened, with terminal control
characters escaped. :func:`check_comparable` refuses curves measured differently from
the first (another unit of the metric, another rate averaging).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ..console import and_more, printable
from ..fileio import atomic_write_bytes, atomic_write_text
from ..filekinds import FileReadError, read_regular_file
from .records import as_number

__all__ = [
    "CODING_METRICS",
    "MAX_CURVE_BYTES",
    "RANDOM_LABEL",
    "CurveFile",
    "atomic_write_bytes",
    "atomic_write_text",
    "axis_label",
    "check_comparable",
    "curve_source",
    "curve_values",
    "load_curve",
    "metric_title",
    "missing_values",
    "point_name",
    "printable",
    "quoted",
    "random_label",
    "random_parts",
    "random_parts_of",
    "to_json_value",
    "unit_words",
    "warn_of_missing_values",
    "write_csv",
    "write_json",
]

logger = logging.getLogger(__name__)


#: the columns measured on the coded and decoded images alone: no task network plays a
#: part in them, so only a random codec makes them meaningless
CODING_METRICS = frozenset({"bpp", "bpp-likelihood", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time"})
#: the label of values from randomly initialised weights
RANDOM_LABEL = "RANDOM WEIGHTS"


def random_parts_of(codec: bool, task_network: bool, metrics: Iterable[str]) -> List[str]:
    """What is random behind values of ``metrics``: ``"codec"`` when the codec is (every
    value depends on it), ``"task network"`` when the network is and a metric is the
    task's (not one of :data:`CODING_METRICS`)."""
    parts = ["codec"] if codec else []
    if task_network and any(m not in CODING_METRICS for m in metrics):
        parts.append("task network")
    return parts


def random_parts(curve: Mapping[str, Any], metrics: Iterable[str], coded: bool = True) -> List[str]:
    """:func:`random_parts_of` for a loaded curve file's values of ``metrics``
    (``coded=False``: its uncompressed reference, which no codec made). A file that
    says ``random_weights`` without ``random_codec`` and ``random_task_network`` gives
    ``["weights"]``: randomness is never hidden."""
    codec, network = curve.get("random_codec"), curve.get("random_task_network")
    if not isinstance(codec, bool) or not isinstance(network, bool) or (not codec and not network):
        return ["weights"] if curve.get("random_weights") else []
    return random_parts_of(codec and coded, network, metrics)


def random_label(parts: Sequence[str]) -> str:
    """``RANDOM WEIGHTS: codec, task network`` for :func:`random_parts`, ``RANDOM WEIGHTS``
    when the parts are not known, ``""`` when nothing is random."""
    if not parts:
        return ""
    return RANDOM_LABEL if list(parts) == ["weights"] else f"{RANDOM_LABEL}: {', '.join(parts)}"


def unit_words(unit: str) -> str:
    """How a unit reads after a metric's name: ``in dB``, ``in %``, and ``unitless`` for
    a dimensionless one (``1 (fraction)``, as MS-SSIM's)."""
    return "unitless" if not unit or unit.startswith("1") else f"in {unit}"


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


#: the largest curve file read: 300,000 points take a few MB
MAX_CURVE_BYTES = 64 << 20


class CurveFile(Dict[str, Any]):
    """A loaded curve file: its fields, and in :attr:`path` the file they came from."""

    path: Optional[Path] = None


def quoted(text: Any, limit: int = 40) -> str:
    """A name or key from a file for a message: shortened, escaped, in quotes."""
    return f"'{printable(text, limit)}'"


def curve_source(curve: Mapping[str, Any]) -> str:
    """The file a loaded curve came from (else its name in quotes), for messages."""
    path = getattr(curve, "path", None)
    return printable(path) if path is not None else f"curve {quoted(curve.get('name', '?'), 60)}"


def load_curve(path: Union[str, Path]) -> CurveFile:
    """Read a curve file (ours or ``compressai.utils.eval_model``'s) and check its shape.

    Raises:
        ValueError: not a regular file of at most :data:`MAX_CURVE_BYTES`, not a JSON
            object with ``results`` lists of equal length including ``bpp``, a key given
            twice, or a field of the wrong type (the message names the file and field).
    """
    path = Path(path)
    where = printable(path)
    raw = _read_curve_bytes(path)
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except _DuplicateKey as err:
        raise ValueError(
            f"{where}: the key {quoted(err.args[0])} is given twice in one object; give each field once"
        ) from None
    except (ValueError, RecursionError) as err:  # not JSON (or not UTF-8), nested too deep, too many digits
        raise ValueError(f"{where} is not valid JSON: {err}") from None
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict) or "bpp" not in results:
        raise ValueError(f"{where} is not a results file: expected an object with a 'results' mapping holding 'bpp'")
    problem = _curve_problem(data) or _length_problem(results)
    if problem:
        raise ValueError(f"{where}: {problem}")
    curve = CurveFile(data)
    curve.setdefault("name", path.stem)
    curve.path = path
    return curve


def _read_curve_bytes(path: Path) -> bytes:
    """The bytes of a regular file of at most :data:`MAX_CURVE_BYTES` (never blocks on a FIFO)."""
    try:
        return read_regular_file(path, MAX_CURVE_BYTES)
    except FileReadError as err:
        if err.size is not None:
            raise _too_big(path, err.size) from None
        raise ValueError(f"{printable(path)}: {err}") from None


def _too_big(path: Path, size: int) -> ValueError:
    return ValueError(
        f"{printable(path)}: {size} bytes, more than the {MAX_CURVE_BYTES} bytes "
        f"({MAX_CURVE_BYTES >> 20} MiB) a curve file may hold; is it a curve file?"
    )


class _DuplicateKey(ValueError):
    """A JSON object that gives a key twice (``args[0]``: the key)."""


def _unique_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    """``object_pairs_hook``: an object's keys as a dict, refusing a key given twice."""
    obj: Dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def _is_number(value: Any) -> bool:
    return as_number(value) is not None


def _length_problem(results: Mapping[str, Any]) -> Optional[str]:
    """The first result list whose length differs from ``bpp``'s, in words, or ``None``."""
    count = len(results["bpp"])
    for key, values in results.items():
        if len(values) != count:
            return (
                f"results[{quoted(key)}] has {len(values)} value(s) but results['bpp'] has {count}; "
                "every result list needs one value per rate point"
            )
    return None


def _curve_problem(data: Mapping[str, Any]) -> Optional[str]:
    """What is wrong with the fields of a curve file, or ``None``."""
    for key, values in data["results"].items():
        if not isinstance(values, list):
            return f"results[{quoted(key)}] is a {type(values).__name__}, not a list"
        wanted, test = ("integers", lambda v: isinstance(v, int)) if key == "quality" else ("numbers", _is_number)
        bad = [v for v in values if v is not None and (isinstance(v, bool) or not test(v))]
        if bad:
            return f"results[{quoted(key)}] holds {quoted(str(bad[0]))}; expected {wanted} or null"
    for key in ("name", "description", "task", "primary_metric", "rate_average"):
        if key in data and not isinstance(data[key], str):
            return f"{key!r} is a {type(data[key]).__name__}, not a string"
    for key in ("random_weights", "random_codec", "random_task_network"):
        if key in data and not isinstance(data[key], bool):
            return f"{key!r} is {printable(repr(data[key]), 60)}, not true or false"
    for key, check, wanted in (
        ("units", lambda v: isinstance(v, str), "a string"),
        ("reference", _is_number, "a number"),
    ):
        table = data.get(key, {})
        if not isinstance(table, dict):
            return f"{key!r} is a {type(table).__name__}, not an object"
        bad_keys = [k for k, v in table.items() if not (check(v) or (key == "reference" and v is None))]
        if bad_keys:
            return f"{key}[{quoted(bad_keys[0])}] is not {wanted}"
    names = data.get("metric_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return "'metric_names' is not a list of strings"
    return None


def curve_values(curve: Mapping[str, Any], metric: str, path: Union[str, Path] = "") -> List[float]:
    """The values of ``metric`` in a curve (``None`` -> NaN), or a clear error naming
    ``path`` (default: the file the curve came from)."""
    results = curve["results"]
    if metric not in results:
        keys = sorted(results)
        available = ", ".join(quoted(k) for k in keys[:12]) + and_more(keys, 12)
        where = printable(path) if path else curve_source(curve)
        raise ValueError(f"{where}: no metric {quoted(metric)}; available: {available}")
    return [math.nan if v is None else float(v) for v in results[metric]]


def point_name(curve: Mapping[str, Any], index: int) -> str:
    """``the point of quality 3``, or ``point 2 of 4`` where the curve has no quality."""
    qualities = curve["results"].get("quality") or []
    quality = qualities[index] if index < len(qualities) else None
    if quality is not None:
        return f"the point of quality {quality}"
    return f"point {index + 1} of {len(curve['results']['bpp'])}"


def missing_values(curve: Mapping[str, Any], metrics: Sequence[str]) -> List[str]:
    """Each point without a finite value of ``bpp`` or of one of ``metrics``, in words
    (``the point of quality 2 has no top1 value (null)``, ``point 3 of 4 has bpp = nan``); metrics the curve lacks are
    left to :func:`curve_values`."""
    results = curve["results"]
    columns = [m for m in dict.fromkeys(["bpp", *metrics]) if m in results]
    found = []
    for index in range(len(results["bpp"])):
        for metric in columns:
            value = results[metric][index]
            if value is None or not math.isfinite(float(value)):
                name = printable(metric, 40)
                shown = f"no {name} value (null)" if value is None else f"{name} = {value}"
                found.append(f"{point_name(curve, index)} has {shown}")
                break
    return found


def warn_of_missing_values(curves: Sequence[Mapping[str, Any]], metrics: Sequence[str], what: str) -> None:
    """Log a warning naming the file for each curve with points that ``what`` (``is
    left out of the plot``) for lack of a value, and for each curve without points."""
    for curve in curves:
        missing = missing_values(curve, metrics)
        if not curve["results"]["bpp"]:
            logger.warning("%s: the curve has no points; it %s", curve_source(curve), what)
        elif missing:
            shown = "; ".join(missing[:3]) + and_more(missing, 3)
            logger.warning("%s: %s; such a point %s", curve_source(curve), shown, what)


def check_comparable(curves: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> None:
    """Refuse curves whose unit of one of ``metrics`` or whose rate averaging differs from
    the first curve's (the anchor's); warn of a curve of another task.

    Raises:
        ValueError: naming both files and the field that differs.
    """
    anchor = curves[0]
    for curve in curves[1:]:
        differ = [
            (f"units[{quoted(m)}]", _unit_text(m, curve), _unit_text(m, anchor))
            for m in metrics
            if m in curve["results"] and m in anchor["results"] and metric_unit(m, curve) != metric_unit(m, anchor)
        ]
        if curve.get("rate_average", "image") != anchor.get("rate_average", "image"):
            differ.append(("'rate_average'", _rate_text(curve), _rate_text(anchor)))
        if differ:
            field, mine, theirs = differ[0]
            raise ValueError(
                f"{curve_source(curve)}: {field} is {mine} but {theirs} in {curve_source(anchor)}, "
                "the first file; curves measured differently cannot be compared"
            )
        if curve.get("task") and anchor.get("task") and curve["task"] != anchor["task"]:
            logger.warning(
                "%s: task %s, but %s in %s, the first file; the curves measure different things",
                curve_source(curve),
                quoted(curve["task"]),
                quoted(anchor["task"]),
                curve_source(anchor),
            )


def _rate_text(curve: Mapping[str, Any]) -> str:
    return quoted(curve["rate_average"]) if "rate_average" in curve else "'image' (the default)"


def _unit_text(metric: str, curve: Mapping[str, Any]) -> str:
    unit = (curve.get("units") or {}).get(metric)
    return quoted(unit) if unit is not None else f"{quoted(metric_unit(metric))} (the default)"


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
