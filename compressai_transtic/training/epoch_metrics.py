"""Running sums of the training metrics, as one named object.

The loss terms are summed weighted by the images of each batch, so that the mean over an
epoch is the same whatever the batch sizes and the number of processes; gradient norms
are averaged over the steps where they are finite. Everything lives in one float64
tensor, so that processes add their sums with a single all-reduce and a checkpoint
taken inside an epoch stores them for an exact resume.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Union

import torch
from torch import Tensor

from .distributed import DistributedContext

__all__ = ["METRICS", "MetricSums"]

#: the image-weighted loss terms, in the order of the sums
METRICS = ("loss", "bpp_loss", "task_loss", "mse_loss")
_IMAGES = len(METRICS)  # then the number of images,
_GRAD_SUM = _IMAGES + 1  # the sum of finite gradient norms
_GRAD_STEPS = _IMAGES + 2  # and the number of steps with a finite gradient norm
_SIZE = _IMAGES + 3


class MetricSums:
    """Sums of the loss terms (x images), images, and finite gradient norms.

    Args:
        device: where the sums live (the training device).
        values: sums to start from (a checkpoint's); zeros by default.
    """

    def __init__(self, device: Union[str, torch.device], values: Optional[Tensor] = None) -> None:
        self.values = torch.zeros(_SIZE, dtype=torch.float64, device=device)
        if values is not None:
            self.values += values.to(device=device, dtype=torch.float64)

    @staticmethod
    def step(losses: Mapping[str, Tensor], mse: Tensor, images: int, grad_norm: Optional[Tensor] = None) -> Tensor:
        """The sums of one batch (no gradient flows): loss terms x images, images, and the
        gradient norm when it is finite."""
        with torch.no_grad():
            terms = [losses["loss"], losses["bpp_loss"], losses["task_loss"], mse]
            row = torch.stack([t.detach().double() for t in terms]) * images
            if grad_norm is None:
                zero = row.new_zeros(1)
                return torch.cat([row, row.new_tensor([images]), zero, zero])
            finite = torch.isfinite(grad_norm).double()
            norm = torch.nan_to_num(grad_norm.double(), nan=0.0, posinf=0.0, neginf=0.0) * finite
            return torch.cat([row, row.new_tensor([images]), norm.view(1).to(row), finite.view(1).to(row)])

    def add(self, row: Tensor) -> None:
        """Add the sums of a batch (:meth:`step`)."""
        self.values += row

    def zero_(self) -> None:
        self.values.zero_()

    def total(self, ctx: DistributedContext) -> "MetricSums":
        """The sums of every process (a copy; these stay as they are)."""
        return MetricSums(self.values.device, ctx.all_reduce_sum(self.values.clone()))

    def finite(self) -> bool:
        """Whether every loss sum is finite (gradient norms are summed only when finite)."""
        return bool(torch.isfinite(self.values[: _IMAGES + 1]).all())

    def means(self) -> Dict[str, float]:
        """Image-weighted means of the loss terms, ``images``, and ``grad_norm`` when any
        step had a finite one."""
        count = float(self.values[_IMAGES])
        out = {name: float(self.values[i]) / max(count, 1.0) for i, name in enumerate(METRICS)}
        out["images"] = count
        if float(self.values[_GRAD_STEPS]) > 0:
            out["grad_norm"] = float(self.values[_GRAD_SUM]) / float(self.values[_GRAD_STEPS])
        return out
