"""``metrics.csv`` of training runs: resuming keeps the rows up to the checkpoint and
survives a log that an interrupted run left damaged."""

from __future__ import annotations

import csv

import pytest

from compressai_transtic.fileio import OutputError
from compressai_transtic.training.metrics_log import CSV_COLUMNS, MetricsLog, read_metrics_csv

METRICS = {"loss": 1.5, "bpp_loss": 0.5, "task_loss": 1.0, "mse_loss": 0.01, "grad_norm": 2.0}


def _row(step: int) -> str:
    values = {"split": "train_step", "epoch": 1, "step": step, "lr": 1e-4, "images": 8, "seconds": 0.5, **METRICS}
    return ",".join(str(values[c]) for c in CSV_COLUMNS) + "\n"


def _log(tmp_path, *lines: str) -> None:
    (tmp_path / "metrics.csv").write_text(",".join(CSV_COLUMNS) + "\n" + "".join(lines), encoding="utf-8")


def _resume_and_write(tmp_path, step: int) -> None:
    log = MetricsLog(tmp_path, enabled=True, tensorboard=False, resume_step=step)
    log.write("train_step", 1, step + 1, METRICS, lr=1e-4, images=8, seconds=0.5)


def test_resuming_drops_the_rows_logged_after_the_checkpoint(tmp_path):
    _log(tmp_path, _row(1), _row(2), _row(3), _row(4))
    _resume_and_write(tmp_path, 2)
    assert [r["step"] for r in read_metrics_csv(tmp_path / "metrics.csv")] == [1, 2, 3]
    assert not (tmp_path / "metrics.csv.damaged").exists()


@pytest.mark.parametrize(
    "damage",
    [
        _row(2)[:30],  # the last line cut short, within the checkpoint's steps
        _row(2)[:-1],  # every field there, but not the end of the line
        "\n",  # a blank line
        "train_st\n",
        "train_step,2,\n",
    ],
    ids=["cut-short", "no-line-end", "blank", "one-field", "empty-step"],
)
def test_a_damaged_row_is_dropped_and_the_log_as_it_was_kept_aside(tmp_path, damage):
    _log(tmp_path, _row(1), damage)
    before = (tmp_path / "metrics.csv").read_text(encoding="utf-8")
    _resume_and_write(tmp_path, 2)
    assert [r["step"] for r in read_metrics_csv(tmp_path / "metrics.csv")] == [1, 3]
    with open(tmp_path / "metrics.csv", newline="", encoding="utf-8") as f:
        assert all(len(row) == len(CSV_COLUMNS) for row in csv.reader(f))
    assert (tmp_path / "metrics.csv.damaged").read_text(encoding="utf-8").startswith(before)


def test_a_metrics_log_that_is_a_folder_or_another_file_is_refused_by_name(tmp_path):
    (tmp_path / "metrics.csv").mkdir()
    with pytest.raises(OutputError, match="metrics.csv: a folder, not a regular file"):
        MetricsLog(tmp_path, enabled=True, tensorboard=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.csv").write_text("name,value\nx,1\n", encoding="utf-8")
    with pytest.raises(OutputError, match="not a metrics log"):
        MetricsLog(other, enabled=True, tensorboard=False, resume_step=3)
    assert (other / "metrics.csv").read_text(encoding="utf-8") == "name,value\nx,1\n"
