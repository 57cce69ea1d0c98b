"""Epoch metrics: image-weighted means of the loss terms, gradient norms over the steps
where they are finite; the oracle is the arithmetic written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from compressai_transtic.training.distributed import DistributedContext
from compressai_transtic.training.epoch_metrics import MetricSums


def _losses(loss, bpp, task):
    return {"loss": torch.tensor(loss), "bpp_loss": torch.tensor(bpp), "task_loss": torch.tensor(task)}


def test_means_weight_each_batch_by_its_images_and_average_finite_gradient_norms():
    sums = MetricSums("cpu")
    sums.add(MetricSums.step(_losses(1.0, 0.5, 2.0), torch.tensor(0.1), 4, torch.tensor(3.0)))
    sums.add(MetricSums.step(_losses(4.0, 1.5, 8.0), torch.tensor(0.4), 2, torch.tensor(float("inf"))))
    means = sums.total(DistributedContext(device=torch.device("cpu"))).means()
    assert means["images"] == 6
    assert means["loss"] == pytest.approx((4 * 1.0 + 2 * 4.0) / 6)
    assert means["bpp_loss"] == pytest.approx((4 * 0.5 + 2 * 1.5) / 6)
    assert means["task_loss"] == pytest.approx((4 * 2.0 + 2 * 8.0) / 6)
    assert means["mse_loss"] == pytest.approx((4 * 0.1 + 2 * 0.4) / 6)
    assert means["grad_norm"] == 3.0  # the infinite one is left out
    assert sums.finite()


def test_validation_sums_have_no_gradient_norm_and_a_nan_loss_is_caught():
    sums = MetricSums("cpu")
    sums.add(MetricSums.step(_losses(1.0, 0.5, 2.0), torch.tensor(0.1), 3))
    assert "grad_norm" not in sums.means() and sums.means()["images"] == 3
    sums.add(MetricSums.step(_losses(math.nan, 0.5, 2.0), torch.tensor(0.1), 1))
    assert not sums.finite()


def test_sums_restart_from_a_checkpoints_values():
    first = MetricSums("cpu")
    first.add(MetricSums.step(_losses(2.0, 1.0, 1.0), torch.tensor(0.2), 2, torch.tensor(1.0)))
    resumed = MetricSums("cpu", first.values.clone())
    resumed.add(MetricSums.step(_losses(4.0, 1.0, 1.0), torch.tensor(0.2), 2, torch.tensor(3.0)))
    assert resumed.means()["loss"] == 3.0 and resumed.means()["grad_norm"] == 2.0
    first.zero_()
    assert first.means()["images"] == 0
