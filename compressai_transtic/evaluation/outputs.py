"""The evaluator's output files, written from its curves and records.

- ``<curve>-<task>.json``: each curve in CompressAI's result format (:mod:`.results`);
- ``results.csv``: one row per curve point and task, each task's uncompressed
  reference first;
- ``per-image.csv``: bytes, bpp, PSNR, MS-SSIM and times of every coded image;
- ``<task>-mpeg.csv``: dataset, codec, quality, bpp and the task's primary metric;
- ``<task>-<metric>.png``: the task's plot, and ``<task>-psnr-rgb.png`` next to it;
- ``skipped-images.txt``: the images left out, with the reason.

:func:`earlier_outputs` finds these files of earlier runs (for ``--fresh``), from the
curves their records hold: it names nothing else in the folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..tasks.base import Task
from .codecs import CodecSpec
from .curves import Curve
from .plot import plot_curves
from .results import atomic_write_text, load_curve, write_csv

__all__ = [
    "PER_IMAGE_COLUMNS",
    "SKIPPED_FILE",
    "TABLES",
    "curve_file_name",
    "curve_path",
    "earlier_outputs",
    "plot_path",
    "write_mpeg_table",
    "write_per_image",
    "write_plots",
    "write_results_table",
    "write_skipped",
]

SKIPPED_FILE = "skipped-images.txt"
#: the tables of every run, whatever its curves
TABLES = ("results.csv", "per-image.csv")

#: per-image columns, in CompressAI ``eval_model``'s vocabulary
PER_IMAGE_COLUMNS = (
    "curve",
    "quality",
    "weights",
    "image",
    "bytes",
    "pixels",
    "bpp",
    "bpp-likelihood",
    "psnr-rgb",
    "ms-ssim-rgb",
    "encoding_time",
    "decoding_time",
)

#: ``per-image.csv`` column -> record field, for the columns the records hold
_RECORD_FIELDS = {
    "bytes": "bytes",
    "pixels": "pixels",
    "bpp": "bpp",
    "bpp-likelihood": "bpp_likelihood",
    "psnr-rgb": "psnr",
    "ms-ssim-rgb": "ms_ssim",
    "encoding_time": "encoding_time",
    "decoding_time": "decoding_time",
}


def curve_file_name(name: str, task: str) -> str:
    """``<curve name>-<task>.json`` (unsafe characters of the name as ``_``)."""
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', name)}-{task}.json"


def curve_path(output_dir: Path, curve: Curve) -> Path:
    """``<output_dir>/<curve name>-<task>.json`` (:func:`curve_file_name`)."""
    return output_dir / curve_file_name(curve.name, curve.task.name)


def _plot_name(task: str, metric: str) -> str:
    return f"{task}-{metric}.png"


def plot_path(output_dir: Path, task: Task, metric: str = "") -> Path:
    """``<output_dir>/<task>-<metric>.png`` (the task's primary metric by default)."""
    return output_dir / _plot_name(task.name, metric or task.primary_metric)


def _task_files(task: str, primary_metric: Optional[str]) -> List[str]:
    """The files written per task: its MPEG table and its plots (the primary metric's
    when known, and PSNR's)."""
    plots = dict.fromkeys([primary_metric, "psnr-rgb"] if primary_metric else ["psnr-rgb"])
    return [f"{task}-mpeg.csv", *(_plot_name(task, metric) for metric in plots)]


def _is_file(path: Path) -> bool:
    """A file or a link (moved as a link), not a folder."""
    return path.is_symlink() or path.is_file()


def earlier_outputs(
    output_dir: Path, curves: Iterable[Tuple[str, str]], primary_metrics: Mapping[str, str]
) -> List[Path]:
    """The output files that earlier runs wrote into ``output_dir`` from records of
    ``curves`` (``(curve name, task name)`` pairs): each curve's JSON, each task's MPEG
    table and plots, the tables and the list of skipped images; only those that exist.

    ``primary_metrics`` gives the primary metric of tasks this run knows (for the name
    of their plots); other tasks' is read from their curve files.
    """
    names: Dict[str, None] = dict.fromkeys(TABLES + (SKIPPED_FILE,))
    tasks: Dict[str, Optional[str]] = {}
    for curve, task in sorted(set(curves)):
        if not _plain(task):
            continue  # not a task name (a forged record): it names no file of ours
        path = output_dir / curve_file_name(curve, task)
        names[path.name] = None
        if tasks.get(task) is None:
            tasks[task] = primary_metrics.get(task) or _primary_metric(path)
    for task, metric in tasks.items():
        names.update(dict.fromkeys(_task_files(task, metric)))
    return [output_dir / name for name in names if _is_file(output_dir / name)]


def _primary_metric(path: Path) -> Optional[str]:
    """The primary metric a curve file names, or ``None`` (missing or unreadable)."""
    if not _is_file(path):
        return None
    try:
        metric = load_curve(path).get("primary_metric")
    except ValueError:
        return None
    return metric if isinstance(metric, str) and _plain(metric) else None


def _plain(name: str) -> bool:
    """A name that stays one file name in ``<name>-...``: no separators, no NUL."""
    return bool(re.fullmatch(r"[^/\\\x00]+", name))


def _table_columns(tasks: Sequence[Task]) -> List[str]:
    columns = ["curve", "task", "quality", "weights", "random_weights", "random_codec", "random_task_network"]
    columns += ["num_images"]
    columns += ["bpp", "bpp-likelihood", "psnr-rgb", "ms-ssim-rgb"]
    for task in tasks:
        columns += [m for m in task.metric_names if m not in columns]
    return columns + ["encoding_time", "decoding_time"]


def write_results_table(
    path: Path, curves: Sequence[Curve], tasks: Sequence[Task], reference_tasks: Sequence[Task], num_images: int
) -> None:
    """``results.csv``: one row per curve point and task, the uncompressed references first."""
    rows: List[Dict[str, Any]] = []
    for task in tasks:
        task_curves = [c for c in curves if c.task is task]
        if task in reference_tasks and task_curves:
            ref = task_curves[0].reference
            rows.append(
                {
                    "curve": "uncompressed",
                    "task": task.name,
                    "weights": "",
                    "random_weights": task.random_weights,
                    "random_codec": False,
                    "random_task_network": task.random_weights,
                    "num_images": num_images,
                    **ref,
                }
            )
        for curve in task_curves:
            for spec, point in zip(curve.specs, curve.points):
                info = {"curve": curve.name, "task": task.name, "weights": spec.describe()}
                random = {
                    "random_weights": curve.random_weights,
                    "random_codec": curve.random_codec,
                    "random_task_network": curve.random_task_network,
                }
                rows.append({**info, **random, "num_images": curve.num_images, **point})
    write_csv(path, rows, _table_columns(tasks))


def write_per_image(path: Path, coded: Iterable[Tuple[Curve, CodecSpec, str, Mapping[str, Any]]]) -> None:
    """``per-image.csv`` from ``(curve, rate point, image id, record)`` of every coded image."""
    rows = [
        {
            "curve": curve.name,
            "quality": spec.quality,
            "weights": spec.describe(),
            "image": image_id,
            **{column: record.get(name) for column, name in _RECORD_FIELDS.items()},
        }
        for curve, spec, image_id, record in coded
    ]
    write_csv(path, rows, PER_IMAGE_COLUMNS)


def write_mpeg_table(path: Path, task: Task, curves: Sequence[Curve], dataset_description: str) -> None:
    """``<task>-mpeg.csv``: dataset, codec, quality, average bpp and the task's accuracy."""
    metric = task.primary_metric
    rows = [
        {
            "dataset": dataset_description,
            "codec": curve.name,
            "quality": point["quality"],
            "bpp": point["bpp"],
            metric: point.get(metric),
        }
        for curve in curves
        for point in curve.points
    ]
    write_csv(path, rows, ["dataset", "codec", "quality", "bpp", metric])


def write_plots(output_dir: Path, task: Task, curves: Sequence[Curve]) -> None:
    """``<task>-<metric>.png``, and ``<task>-psnr-rgb.png`` next to it for machine tasks."""
    as_json = [c.to_json() for c in curves]
    plot_curves(as_json, plot_path(output_dir, task))
    if task.primary_metric != "psnr-rgb":
        plot_curves(as_json, plot_path(output_dir, task, "psnr-rgb"), metric="psnr-rgb", show_reference=False)


def write_skipped(path: Path, skipped: Sequence[Tuple[Any, str]]) -> None:
    """The images left out and why, one per line; an earlier run's list goes when none was."""
    if skipped:
        atomic_write_text(path, "".join(f"{item.path}\t{reason}\n" for item, reason in skipped))
    elif path.exists():
        path.unlink()  # from an earlier run: this run evaluated every image
