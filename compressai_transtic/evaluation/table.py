"""Cross-model tables of result files, as Markdown or LaTeX, for papers and READMEs.

One row per rate point of each curve file (model, quality, rate, the chosen metrics
with their units), and per model its BD-rate against the first file (the anchor) on
the first metric, where the curves overlap. LaTeX output uses ``booktabs`` rules
(``\\usepackage{booktabs}``) and escapes the characters TeX treats specially.
"""

from __future__ import annotations

import logging
import math
from typing import Any, List, Mapping, Optional, Sequence

from ..strenum import StrEnum, parse_choice
from .bd import curve_bd_rate, warn_of_falling_curves
from .results import (
    axis_label,
    check_comparable,
    curve_source,
    curve_values,
    printable,
    random_label,
    random_parts,
    warn_of_missing_values,
)

__all__ = ["TableFormat", "cross_model_table", "random_caption", "render"]

logger = logging.getLogger(__name__)


class TableFormat(StrEnum):
    """Output syntax of :func:`render`."""

    MARKDOWN = "markdown"
    LATEX = "latex"

    @classmethod
    def from_suffix(cls, suffix: str) -> Optional["TableFormat"]:
        """``.md`` -> Markdown, ``.tex`` -> LaTeX, anything else -> ``None``."""
        return {".md": cls.MARKDOWN, ".markdown": cls.MARKDOWN, ".tex": cls.LATEX}.get(suffix.lower())


def _number(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{float(value):.{digits}f}"


def _digits(metric: str) -> int:
    return 4 if metric in ("bpp", "ms-ssim-rgb") else 2


def _bd_cell(anchor: Mapping[str, Any], curve: Mapping[str, Any], metric: str) -> str:
    try:
        return f"{curve_bd_rate(anchor, curve, metric):+.2f} %"
    except ValueError as err:
        logger.warning("no BD-rate for %s against %s: %s", curve_source(curve), curve_source(anchor), err)
        return "n/a"


def cross_model_table(curves: Sequence[Mapping[str, Any]], metrics: Sequence[str], bd: bool = True) -> List[List[str]]:
    """The table's rows as text cells, the header first.

    Points without a value show ``-`` and a curve without points one row of ``-``;
    both are warned of, naming the file, as is each BD-rate that cannot be given. A
    model whose values in the table come from random weights says what is random
    after its name (as :func:`~.plot.plot_curves` labels curves).

    Args:
        curves: loaded curve files; the first is the BD-rate anchor.
        metrics: the metric columns (each curve must hold them).
        bd: add the column of BD-rates on ``metrics[0]`` against the first curve.

    Raises:
        ValueError: a curve without one of ``metrics``, or measured differently from
            the first (the message names the files).
    """
    if not curves:
        raise ValueError("no curve files given")
    if not metrics:
        raise ValueError("no metric columns given")
    check_comparable(curves, metrics)
    header = ["model", "quality", axis_label("bpp")] + [axis_label(m, curves[0]) for m in metrics]
    if bd:
        header.append(f"BD-rate vs {curves[0].get('name', 'first')} ({axis_label(metrics[0], curves[0])})")
    rows = [header]
    for index, curve in enumerate(curves):
        values = {m: curve_values(curve, m) for m in ["bpp", *metrics]}
        qualities = curve["results"].get("quality") or [None] * len(values["bpp"])
        random = random_label(random_parts(curve, ["bpp", *metrics]))
        name = str(curve.get("name", "?")) + (f" [{random}]" if random else "")
        bd_cell = ("anchor" if index == 0 else _bd_cell(curves[0], curve, metrics[0])) if bd else ""
        for point, quality in enumerate(qualities or [None]):  # a curve without points: one row of "-"
            row = [name if point == 0 else "", "-" if quality is None else str(quality)]
            row += [_number(values[m][point] if values[m] else None, _digits(m)) for m in ["bpp", *metrics]]
            if bd:
                row.append(bd_cell if point == 0 else "")
            rows.append(row)
    warn_of_missing_values(curves, metrics, "shows - in the table")
    if bd:
        warn_of_falling_curves(curves, metrics[0])
    return rows


def random_caption(curves: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> str:
    """The caption's warning when values in the table (rates and ``metrics``) come from
    random weights (the rows say which), ``""`` otherwise."""
    random = any(random_parts(c, ["bpp", *metrics]) for c in curves)
    return "RANDOM WEIGHTS: not meaningful." if random else ""


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "|": r"\textbar{}",
}


def _latex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in printable(text))


def _markdown(text: str) -> str:
    return printable(text).replace("|", "\\|")


def render(rows: Sequence[Sequence[str]], fmt: TableFormat, caption: str = "") -> str:
    """The rows of :func:`cross_model_table` as Markdown or LaTeX text; cells and caption
    are escaped (newlines and other control characters as ``\\n``, ``\\x1b``...)."""
    header, body = rows[0], rows[1:]
    if parse_choice(TableFormat, fmt, "table format") is TableFormat.MARKDOWN:
        lines = ["| " + " | ".join(map(_markdown, header)) + " |"]
        lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
        lines += ["| " + " | ".join(map(_markdown, row)) + " |" for row in body]
        return ("" if not caption else f"{printable(caption)}\n\n") + "\n".join(lines) + "\n"
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(r"\caption{" + _latex(caption) + "}")
    lines += [
        r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(_latex(c) for c in header) + r" \\",
        r"\midrule",
    ]
    for row in body:
        if row[0] and row is not body[0]:
            lines.append(r"\midrule")
        lines.append(" & ".join(_latex(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
