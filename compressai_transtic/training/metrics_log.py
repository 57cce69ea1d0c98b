"""Training metrics: CSV always, TensorBoard when installed, one log line per row."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from ..fileio import OutputError, atomic_write_text
from ..filekinds import regular_file_problem
from .config import option_ref

__all__ = ["CSV_COLUMNS", "MetricsLog", "read_metrics_csv"]

logger = logging.getLogger(__name__)

#: columns of ``metrics.csv``; ``split`` is ``train_step`` (mean over the last
#: ``log_every`` steps), ``train`` (mean over an epoch) or ``val`` (validation set;
#: epoch 0 is before training); ``grad_norm`` is the mean gradient norm of the
#: adapter parameters before clipping (empty for validation)
CSV_COLUMNS = (
    "split",
    "epoch",
    "step",
    "lr",
    "loss",
    "bpp_loss",
    "task_loss",
    "mse_loss",
    "grad_norm",
    "images",
    "seconds",
)


def read_metrics_csv(path: os.PathLike) -> List[Dict[str, Any]]:
    """Rows of a ``metrics.csv`` with numbers converted."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out: Dict[str, Any] = {}
            for key, value in row.items():
                if key == "split":
                    out[key] = value
                elif key in ("epoch", "step", "images"):
                    out[key] = int(value)
                else:
                    out[key] = float(value) if value not in ("", None) else math.nan
            rows.append(out)
    return rows


class MetricsLog:
    """Writes metric rows (rank 0 only; a disabled log does nothing).

    Args:
        directory: output directory (``metrics.csv`` and ``tensorboard/`` go there).
        enabled: whether this process writes.
        tensorboard: also write TensorBoard events if ``tensorboard`` is installed.
        resume_step: when resuming from the checkpoint of this global step, rows of
            later steps (written after that checkpoint, before an interruption) are
            removed so that the log matches an uninterrupted run.
    """

    def __init__(
        self, directory: Path, enabled: bool, tensorboard: bool = True, resume_step: Optional[int] = None
    ) -> None:
        self.enabled = enabled
        self.path = Path(directory) / "metrics.csv"
        self._tb: Any = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        problem = regular_file_problem(self.path) if self.path.exists() else None
        if problem is not None:
            raise OutputError(f"{self.path}: {problem}; move it away or choose another {option_ref('output')}")
        if resume_step is not None and self.path.is_file():
            self._truncate(resume_step)
        if not self.path.is_file():
            with self.path.open("w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerow(CSV_COLUMNS)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.info("tensorboard is not installed: metrics go to %s only (pip install tensorboard)", self.path)
            else:
                purge = None if resume_step is None else resume_step + 1
                self._tb = SummaryWriter(log_dir=str(Path(directory) / "tensorboard"), purge_step=purge)

    def _truncate(self, step: int) -> None:
        """Keep the rows up to ``step``; rows that cannot be read (a line half-written when
        the run was stopped, an edited file) are dropped too, the file as it was being
        kept as ``metrics.csv.damaged`` so that nothing is lost."""
        with self.path.open(newline="", encoding="utf-8", errors="replace") as f:
            text = f.read()
        rows = list(csv.reader(io.StringIO(text, newline="")))
        if not rows:
            return
        header, body = rows[0], rows[1:]
        if "step" not in header:
            raise OutputError(
                f"{self.path}: not a metrics log (its first line names no 'step' column); "
                f"move it away or choose another {option_ref('output')}"
            )
        steps = [_row_step(row, header) for row in body]
        if steps and not text.endswith(("\n", "\r")):
            steps[-1] = None  # the last line was cut short
        kept = [row for row, at in zip(body, steps) if at is not None and at <= step]
        if len(kept) == len(body):
            return
        unreadable = steps.count(None)
        if unreadable:
            damaged = self.path.with_name(self.path.name + ".damaged")
            with damaged.open("a", encoding="utf-8") as f:
                f.write(text if text.endswith(("\n", "\r")) else text + "\n")
            logger.warning(
                "%s: %d unreadable rows dropped (a line half-written when the run stopped?); "
                "the file as it was is appended to %s",
                self.path,
                unreadable,
                damaged,
            )
        out = io.StringIO(newline="")
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(kept)
        atomic_write_text(self.path, out.getvalue())
        later = len(body) - unreadable - len(kept)
        logger.info("removed %d metric rows logged after the resumed checkpoint (step %d)", later, step)

    def write(
        self, split: str, epoch: int, step: int, metrics: Mapping[str, float], lr: float, images: int, seconds: float
    ) -> None:
        """Append one row (and TensorBoard scalars ``<split>/<metric>``)."""
        if not self.enabled:
            return
        values: Dict[str, Any] = {
            "split": split,
            "epoch": epoch,
            "step": step,
            "lr": lr,
            "images": images,
            "seconds": round(seconds, 3),
        }
        for key in ("loss", "bpp_loss", "task_loss", "mse_loss", "grad_norm"):
            values[key] = metrics.get(key, "")
        with self.path.open("a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow([_fmt(values[c]) for c in CSV_COLUMNS])
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(f"{split}/{key}", value, step)
            if split != "val":
                self._tb.add_scalar("lr", lr, step)
        logger.info(
            "%s epoch %d step %d: loss %.5g | bpp %.5g | task %.5g | mse %.3g | lr %.3g",
            split,
            epoch,
            step,
            metrics["loss"],
            metrics["bpp_loss"],
            metrics["task_loss"],
            metrics["mse_loss"],
            lr,
        )

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _row_step(row: List[str], header: List[str]) -> Optional[int]:
    """The step of a row of ``metrics.csv``, or ``None`` for a row that cannot be read."""
    if len(row) != len(header):
        return None
    try:
        return int(row[header.index("step")])
    except ValueError:
        return None


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)
    return value
