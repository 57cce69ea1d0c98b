"""Entropy models with the parameter layout of the released TransTIC checkpoints."""

from __future__ import annotations

from typing import Any, List

import torch
import torch.nn as nn
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from torch import Tensor

__all__ = ["LegacyEntropyBottleneck", "BucketizedGaussianConditional"]


class LegacyEntropyBottleneck(EntropyBottleneck):
    """CompressAI's :class:`~compressai.entropy_models.EntropyBottleneck` whose
    parameters are stored as ``_matrix{i}``, ``_bias{i}``, ``_factor{i}``.

    That is the layout of the released TIC/TransTIC checkpoints (CompressAI < 1.2
    naming); the density model itself is unchanged. ``matrices``, ``biases`` and
    ``factors`` remain readable as lists, as CompressAI's code expects.

    Args:
        channels: number of channels.
        **kwargs: forwarded to :class:`~compressai.entropy_models.EntropyBottleneck`.
    """

    def __init__(self, channels: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(channels, *args, **kwargs)
        for list_name, prefix in (("matrices", "_matrix"), ("biases", "_bias"), ("factors", "_factor")):
            params = self._modules.pop(list_name)
            for i, p in enumerate(params):
                self.register_parameter(f"{prefix}{i}", nn.Parameter(p.data))

    def _collect(self, prefix: str, count: int) -> List[Tensor]:
        return [getattr(self, f"{prefix}{i}") for i in range(count)]

    @property
    def matrices(self) -> List[Tensor]:  # type: ignore[override]
        return self._collect("_matrix", len(self.filters) + 1)

    @property
    def biases(self) -> List[Tensor]:  # type: ignore[override]
        return self._collect("_bias", len(self.filters) + 1)

    @property
    def factors(self) -> List[Tensor]:  # type: ignore[override]
        return self._collect("_factor", len(self.filters))


class BucketizedGaussianConditional(GaussianConditional):
    """CompressAI's :class:`~compressai.entropy_models.GaussianConditional` with
    :meth:`build_indexes` done by one :func:`torch.bucketize`.

    CompressAI compares the scales with every entry of the scale table in turn (64
    passes over the latent); the indexes are identical: each scale gets the number of
    table entries (the last one left out) that are smaller than it.
    """

    def build_indexes(self, scales: Tensor) -> Tensor:
        scales = self.lower_bound_scale(scales).contiguous()
        boundaries = self.scale_table[:-1].to(dtype=scales.dtype).contiguous()
        return torch.bucketize(scales, boundaries, right=False).int()
