"""The commands that work on result files: ``compare`` (Bjontegaard deltas against an
anchor), ``plot`` (rate against a metric) and ``table`` (a cross-model table).

Each has an ``add_*_arguments(parser)`` and a ``run_*(args) -> int`` pair, used by
:mod:`compressai_transtic.cli`. They read the JSON curves that ``eval`` writes, and
every line they print is tagged when a curve came from random weights.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from ..console import and_more, print_error, printer, setup_logging
from ..fileio import check_writable_folder
from ..filekinds import output_problem, regular_file_problem
from .bd import (
    LOW_OVERLAP,
    METHODS,
    BDAxis,
    BDMethod,
    bd_metric,
    bd_rate,
    curve_points,
    overlap_share,
    warn_of_falling_curves,
)
from .plot import DPI_RANGE, check_dpi, default_metric, plot_curves, plot_format
from .results import (
    atomic_write_text,
    check_comparable,
    curve_source,
    load_curve,
    printable,
    random_parts,
    write_json,
)
from .table import TableFormat, cross_model_table, random_caption, render

__all__ = [
    "add_compare_arguments",
    "add_plot_arguments",
    "add_table_arguments",
    "run_compare",
    "run_plot",
    "run_table",
]

logger = logging.getLogger(__name__)


def _check_output(output: Path, inputs: Sequence[Path], force: bool, option: str) -> None:
    """Refuse, before anything is read, an output that is one of the inputs (even with
    ``--force``), that is not a regular file, or that exists without ``--force``."""
    if not output.exists():
        return
    problem = regular_file_problem(output)
    if problem:
        raise ValueError(f"{printable(output)}: {problem}; choose another {option}")
    problem = output_problem(output, inputs, force, option)
    if problem:
        raise ValueError(f"{printable(output)} {problem}")


def _add_force(parser: argparse.ArgumentParser, option: str) -> None:
    parser.add_argument("--force", action="store_true", help=f"overwrite an existing {option} file")


# ---------------------------------------------------------------------------- compare
def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``compressai-transtic compare``."""
    parser.description = (  # not %-formatted: argparse formats the help of arguments only
        "Bjontegaard deltas of curves against an anchor: BD-rate (% rate change at equal "
        "metric; negative = savings) and BD-metric (metric change at equal rate)."
    )
    parser.add_argument("anchor", type=Path, help="anchor curve (JSON results file)")
    parser.add_argument("tests", type=Path, nargs="+", help="curves to compare with the anchor")
    parser.add_argument("--metric", help="metric (default: the anchor's primary metric, else psnr-rgb)")
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="pchip",
        help="interpolation: pchip (piecewise cubic, default) or cubic (polynomial fit, VCEG-M33)",
    )
    parser.add_argument("--json", type=Path, help="also write the deltas to this JSON file")
    _add_force(parser, "--json")


def run_compare(args: argparse.Namespace) -> int:
    """Run ``compressai-transtic compare``."""
    try:
        if args.json:
            check_writable_folder(args.json.parent, "--json")
            _check_output(args.json, [args.anchor, *args.tests], args.force, "--json")
        anchor = load_curve(args.anchor)
        tests = [load_curve(p) for p in args.tests]
    except (OSError, ValueError) as err:
        return print_error(str(err))
    metric = args.metric or anchor.get("primary_metric") or "psnr-rgb"
    random_weights = any(random_parts(c, [metric]) for c in [anchor, *tests])  # the deltas read rate and metric
    setup_logging(0, random_weights)
    try:
        check_comparable([anchor, *tests], [metric])
        rows, failed = _compare_all(args, anchor, tests, metric, printer(random_weights))
    except ValueError as err:
        return print_error(str(err), random_weights)
    if args.json:
        try:
            write_json(args.json, {"random_weights": random_weights, "comparisons": rows})
        except OSError as err:  # OutputError: names the file
            return print_error(str(err), random_weights)
        printer(random_weights)(f"wrote {printable(args.json)}")
    for message in failed:  # the other curves were compared; these could not be
        print_error(message, random_weights)
    return 2 if failed else 0


def _compare_all(
    args: argparse.Namespace, anchor: Mapping[str, Any], tests: Sequence[Mapping[str, Any]], metric: str, out: Any
) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Each test curve against the anchor: the rows of the JSON, and the failures."""
    unit = (anchor.get("units") or {}).get(metric, "")
    unit = "percentage points" if unit == "%" else unit
    rows: List[Dict[str, Any]] = []
    failed: List[str] = []
    ra, ma = curve_points(anchor, metric)
    anchor_falls = bool(warn_of_falling_curves([anchor], metric))
    for path, test in zip(args.tests, tests):
        row: Dict[str, Any] = {"anchor": str(args.anchor), "test": str(path), "metric": metric, "method": args.method}
        row.update(_test_deltas(anchor, test, ra, ma, metric, args.method), bd_metric_unit=unit)
        row["falling"] = {"anchor": anchor_falls, "test": bool(warn_of_falling_curves([test], metric))}
        rows.append(row)
        if row["bd_rate"] is None and row["bd_metric"] is None:
            failed.append(f"{printable(path)} vs {printable(args.anchor)}: {_no_deltas_text(row)}")
            continue
        shown_metric = printable(metric, 40)
        out(
            f"{printable(test.get('name', path), 80)} vs {printable(anchor.get('name', args.anchor), 80)} "
            f"({shown_metric}, {args.method}): "
            + _delta_text(row, "bd_rate", "BD-rate", "+.2f", " %")
            + ", "
            + _delta_text(row, "bd_metric", f"BD-{shown_metric}", "+.3f", f" {printable(unit, 40)}" if unit else "")
        )
        _warn_of_low_overlap(row, path, args.anchor)
    return rows, failed


def _test_deltas(
    anchor: Mapping[str, Any], test: Mapping[str, Any], ra: Any, ma: Any, metric: str, method: BDMethod
) -> Dict[str, Any]:
    """:func:`_deltas` of one test curve, or both deltas ``None`` with the reason its
    points cannot be used (a point without a value)."""
    try:
        rt, mt = curve_points(test, metric)
    except ValueError as err:
        return {"bd_rate": None, "bd_rate_error": str(err), "bd_metric": None, "bd_metric_error": str(err)}
    return _deltas(ra, ma, rt, mt, method, names=(curve_source(anchor), curve_source(test)))


def _deltas(ra: Any, ma: Any, rt: Any, mt: Any, method: BDMethod, names: Tuple[str, str]) -> Dict[str, Any]:
    """BD-rate and BD-metric of a test curve against the anchor, with the share of the
    range they have in common. BD-rate needs the curves to share metric values,
    BD-metric rates: each one that exists is given, the other as ``None`` with its reason."""
    deltas: Dict[str, Any] = {}
    for key, delta_of, axis in (("bd_rate", bd_rate, BDAxis.METRIC), ("bd_metric", bd_metric, BDAxis.RATE)):
        try:
            deltas[key] = delta_of(ra, ma, rt, mt, method=method, names=names)
            deltas[f"{key}_overlap"] = overlap_share(ra, ma, rt, mt, axis)
        except ValueError as err:
            deltas[key], deltas[f"{key}_error"] = None, str(err)
    return deltas


def _warn_of_low_overlap(row: Dict[str, Any], path: Path, anchor: Path) -> None:
    low = [
        f"{row[key + '_overlap']:.0%} of their {axis} range"
        for key, axis in (("bd_rate", "metric"), ("bd_metric", "log-rate"))
        if row.get(key + "_overlap", 1.0) < LOW_OVERLAP
    ]
    if low:
        logger.warning(
            "%s and %s share only %s: the delta extrapolates the rest",
            printable(path),
            printable(anchor),
            " and ".join(low),
        )


def _no_deltas_text(row: Dict[str, Any]) -> str:
    """Why neither delta exists: each reason with its delta, or the one reason of both
    (a curve that BD cannot read at all)."""
    rate, metric = row["bd_rate_error"], row["bd_metric_error"]
    return rate if rate == metric else f"no BD-rate: {rate}; no BD-metric: {metric}"


def _delta_text(row: Dict[str, Any], key: str, name: str, fmt: str, unit: str) -> str:
    if row[key] is None:
        return f"{name} n/a ({row[key + '_error']})"
    return f"{name} {format(row[key], fmt)}{unit} (overlap {row[key + '_overlap']:.0%})"


# ---------------------------------------------------------------------------- plot
def _dpi(text: str) -> int:
    """``--dpi``: an integer in :data:`~.plot.DPI_RANGE`."""
    try:
        return check_dpi(int(text))
    except ValueError:
        low, high = DPI_RANGE
        raise argparse.ArgumentTypeError(
            f"'{printable(text, 40)}' is not a resolution: give an integer from {low} to {high}"
        ) from None


def add_plot_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``compressai-transtic plot``."""
    parser.description = "Plot rate (bpp) against a metric for several result files (PNG, PDF or SVG)."
    parser.add_argument("files", type=Path, nargs="+", help="curve files (JSON results)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="file to write: .png, .pdf or .svg")
    low, high = DPI_RANGE
    parser.add_argument("--dpi", type=_dpi, default=150, help=f"resolution of PNG output: {low} to {high}, default 150")
    parser.add_argument("--metric", help="metric (default: the first file's primary metric, else psnr-rgb)")
    parser.add_argument("--title", help="plot title")
    parser.add_argument("--no-reference", action="store_true", help="do not draw the uncompressed reference")
    parser.add_argument(
        "--bd-rate",
        action="store_true",
        help="annotate each curve after the first with its BD-rate against the first one",
    )
    _add_force(parser, "-o")


def run_plot(args: argparse.Namespace) -> int:
    """Run ``compressai-transtic plot``."""
    random_weights = False
    try:
        plot_format(args.output)  # before reading anything
        check_writable_folder(args.output.parent, "plot")
        _check_output(args.output, args.files, args.force, "-o")
        curves = [load_curve(p) for p in args.files]
        random_weights = any(random_parts(c, [args.metric or default_metric(curves)]) for c in curves)
        setup_logging(0, random_weights)
        path = plot_curves(
            curves,
            args.output,
            metric=args.metric,
            title=args.title,
            show_reference=not args.no_reference,
            dpi=args.dpi,
            bd_rate_against_first=args.bd_rate,
        )
    except (OSError, ValueError) as err:
        return print_error(str(err), random_weights)
    printer(random_weights)(f"wrote {printable(path)}")
    return 0


# ---------------------------------------------------------------------------- table
def add_table_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``compressai-transtic table``."""
    parser.description = (
        "A cross-model table of result files: one row per rate point (rate and metrics with "
        "their units) and each model's BD-rate against the first file."
    )
    parser.add_argument("files", type=Path, nargs="+", help="curve files (JSON results); the first is the anchor")
    parser.add_argument(
        "--metric",
        nargs="+",
        help="metric columns (default: the first file's primary metric, then psnr-rgb where every file has it)",
    )
    parser.add_argument(
        "--format",
        choices=TableFormat.values(),
        help="syntax (default: from the -o extension .md / .tex, else markdown)",
    )
    parser.add_argument("-o", "--output", type=Path, help="write the table to this file (default: print it)")
    parser.add_argument("--caption", default="", help="table caption (default: none)")
    parser.add_argument("--no-bd-rate", action="store_true", help="leave out the BD-rate column")
    _add_force(parser, "-o")


def run_table(args: argparse.Namespace) -> int:
    """Run ``compressai-transtic table``."""
    random_weights = False
    try:
        fmt = TableFormat(args.format) if args.format else None
        if args.output is not None:
            fmt = fmt or TableFormat.from_suffix(args.output.suffix)
            check_writable_folder(args.output.parent, "table")
            _check_output(args.output, args.files, args.force, "-o")
        curves = [load_curve(p) for p in args.files]
        metrics, note = (args.metric, "") if args.metric else _default_metrics(curves)
        warning = random_caption(curves, metrics)
        random_weights = bool(warning)
        setup_logging(0, random_weights)
        if note:
            logger.warning("%s", note)
        text = render(
            cross_model_table(curves, metrics, bd=not args.no_bd_rate),
            fmt or TableFormat.MARKDOWN,
            caption=f"{warning} {args.caption}".strip(),
        )
        if args.output is not None:
            atomic_write_text(args.output, text)
    except (OSError, ValueError) as err:
        return print_error(str(err), random_weights)
    if args.output is None:
        sys.stdout.write(text)
    else:
        printer(random_weights)(f"wrote {printable(args.output)}")
    return 0


def _default_metrics(curves: Sequence[Mapping[str, Any]]) -> Tuple[List[str], str]:
    """The first file's primary metric, then ``psnr-rgb`` where every file holds it; and
    the warning to give when it is left out (naming the files that lack it), else ``""``."""
    first = curves[0].get("primary_metric")
    metrics = [first] if first else []
    note = ""
    if "psnr-rgb" not in metrics:
        lacking = [curve_source(c) for c in curves if "psnr-rgb" not in c["results"]]
        if not lacking:
            metrics.append("psnr-rgb")
        elif metrics:
            shown = ", ".join(lacking[:3]) + and_more(lacking, 3)
            note = f"the psnr-rgb column is left out: {shown} has no psnr-rgb (ask for it with --metric)"
        else:
            raise ValueError(f"{curve_source(curves[0])} names no primary_metric; choose the columns with --metric")
    return metrics, note
