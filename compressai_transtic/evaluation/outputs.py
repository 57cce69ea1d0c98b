"""The evaluator's output files, written from its curves and records.

- ``<curve>-<task>.json``: each curve in CompressAI's result format (:mod:`.results`);
- ``results.csv``: one row per curve point and task, each task's uncompressed
  reference first;
- ``per-image.csv``: bytes, bpp, PSNR, MS-SSIM and times of every coded image;
- ``<task>-mpeg.csv``: dataset, codec, quality, bpp and the task's primary metric;
- ``<task>-<metric>.png``: the task's plot, and ``<task>-psnr-rgb.png`` next to it;
- ``skipped-images.txt``: the images left out, with the reason.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

from ..tasks.base import Task
from .codecs import CodecSpec
from .curves import Curve
from .plot import plot_curves
from .results import atomic_write_text, write_csv

__all__ = [
    "PER_IMAGE_COLUMNS",
    "SKIPPED_FILE",
    "curve_path",
    "plot_path",
    "write_mpeg_table",
    "write_per_image",
    "write_plots",
    "write_results_table",
    "write_skipped",
]

SKIPPED_FILE = "skipped-images.txt"

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


def curve_path(output_dir: Path, curve: Curve) -> Path:
    """``<output_dir>/<curve name>-<task>.json`` (unsafe characters of the name as ``_``)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", curve.name)
    return output_dir / f"{name}-{curve.task.name}.json"


def plot_path(output_dir: Path, task: Task, metric: str = "") -> Path:
    """``<output_dir>/<task>-<metric>.png`` (the task's primary metric by default)."""
    return output_dir / f"{task.name}-{metric or task.primary_metric}.png"


def _table_columns(tasks: Sequence[Task]) -> List[str]:
    columns = ["curve", "task", "quality", "weights", "random_weights", "num_images"]
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
                    "num_images": num_images,
                    **ref,
                }
            )
        for curve in task_curves:
            for spec, point in zip(curve.specs, curve.points):
                info = {"curve": curve.name, "task": task.name, "weights": spec.describe()}
                rows.append({**info, "random_weights": curve.random_weights, "num_images": curve.num_images, **point})
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
