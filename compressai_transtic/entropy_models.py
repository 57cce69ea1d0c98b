"""Entropy models with the parameter layout of the released TransTIC checkpoints."""

from __future__ import annotations

import array
from typing import Any, List, Optional, Tuple

import torch
import torch.nn as nn
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from torch import Tensor

__all__ = ["LegacyEntropyBottleneck", "BucketizedGaussianConditional"]


class LegacyEntropyBottleneck(EntropyBottleneck):
    """CompressAI's :class:`~compressai.entropy_models.EntropyBottleneck` whose
    parameters are stored as ``_matrix{i}``, ``_bias{i}``, ``_factor{i}``, and whose
    likelihood is computed as in the CompressAI version the released weights were
    trained with.

    * Layout: that of the released TIC/TransTIC checkpoints (CompressAI < 1.2 naming).
      ``matrices``, ``biases`` and ``factors`` remain readable as lists, as
      CompressAI's code expects.
    * Likelihood (:meth:`_likelihood`, used by ``forward`` and by the pmf that
      :meth:`update` turns into CDF tables): the difference of the two sigmoids is
      taken on the side of the density where it does not cancel. With
      ``s = -sign(lower + upper)`` it is ``|sigmoid(s * upper) - sigmoid(s * lower)|``.
      CompressAI 1.2.8 computes ``sigmoid(upper) - sigmoid(lower)``, which in float32
      loses the upper tail (both terms round to 1): more z bits than the authors'
      model counts, and a few different entries in rebuilt CDF tables.

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

    def _likelihood(self, inputs: Tensor, stop_gradient: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
        lower = self._logits_cumulative(inputs - 0.5, stop_gradient=stop_gradient)
        upper = self._logits_cumulative(inputs + 0.5, stop_gradient=stop_gradient)
        # mirror the upper half of the density onto the lower one, where sigmoid is exact
        sign = -torch.sign(lower + upper).detach()
        likelihood = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return likelihood, lower, upper

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
    faster bookkeeping around the same entropy coder; bitstreams and decoded values
    are identical.

    * :meth:`build_indexes` is one :func:`torch.bucketize`. CompressAI compares the
      scales with every entry of the scale table in turn (64 passes over the latent);
      each scale gets the number of table entries (the last one left out) that are
      smaller than it, as there.
    * :meth:`compress` / :meth:`decompress` convert the coding tables to Python
      lists once per table update, not per call, and :meth:`decompress` turns the
      decoded symbols into a tensor through a buffer (a ``torch.tensor`` of a list of
      300k Python ints takes about 20 ms, the buffer about 8 ms).
    """

    def _coding_tables(self) -> Tuple[List[List[int]], List[int], List[int]]:
        """``(quantized CDFs, CDF lengths, offsets)`` as the lists the coder takes,
        rebuilt whenever one of the buffers changes (``update``, ``load_state_dict``)."""
        self._check_cdf_size()
        self._check_cdf_length()
        self._check_offsets_size()
        buffers = (self._quantized_cdf, self._cdf_length, self._offset)
        key = tuple((t._version, t.data_ptr(), tuple(t.shape)) for t in buffers)
        cached = self.__dict__.get("_tables")
        if cached is None or cached[0] != key:
            cdf, lengths, offsets = buffers
            tables = (cdf.tolist(), lengths.reshape(-1).int().tolist(), offsets.reshape(-1).int().tolist())
            cached = self.__dict__["_tables"] = (key, tables)
        return cached[1]

    def compress(self, inputs: Tensor, indexes: Tensor, means: Optional[Tensor] = None) -> List[bytes]:
        """Entropy-code ``inputs`` (``(B, C, ...)``) with the CDFs picked by ``indexes``;
        one string per batch item."""
        if inputs.dim() < 2:
            raise ValueError(f"expected inputs with at least 2 dimensions, got shape {tuple(inputs.shape)}")
        if inputs.shape != indexes.shape:
            raise ValueError(f"inputs {tuple(inputs.shape)} and indexes {tuple(indexes.shape)} differ in shape")
        cdf, lengths, offsets = self._coding_tables()
        symbols = self.quantize(inputs, "symbols", means)
        return [
            self.entropy_coder.encode_with_indexes(
                symbols[i].reshape(-1).tolist(), indexes[i].reshape(-1).int().tolist(), cdf, lengths, offsets
            )
            for i in range(symbols.shape[0])
        ]

    def decompress(
        self,
        strings: List[bytes],
        indexes: Tensor,
        dtype: torch.dtype = torch.float,
        means: Optional[Tensor] = None,
    ) -> Tensor:
        """Decode what :meth:`compress` wrote: ``strings`` (one per batch item) with the
        same ``indexes`` (and ``means``)."""
        if not isinstance(strings, (tuple, list)):
            raise ValueError(f"expected a list of strings, got {type(strings).__name__}")
        if indexes.dim() < 2:
            raise ValueError(f"expected indexes with at least 2 dimensions, got shape {tuple(indexes.shape)}")
        if len(strings) != indexes.shape[0]:
            raise ValueError(f"{len(strings)} strings for a batch of {indexes.shape[0]} indexes")
        if means is not None and (
            means.shape[:2] != indexes.shape[:2]
            or any(m not in (1, i) for m, i in zip(means.shape[2:], indexes.shape[2:]))
        ):
            raise ValueError(f"means {tuple(means.shape)} do not broadcast to indexes {tuple(indexes.shape)}")
        cdf, lengths, offsets = self._coding_tables()
        outputs = self._quantized_cdf.new_empty(indexes.shape)
        for i, string in enumerate(strings):
            values = self.entropy_coder.decode_with_indexes(
                string, indexes[i].reshape(-1).int().tolist(), cdf, lengths, offsets
            )
            if values:  # (frombuffer refuses an empty buffer)
                outputs[i] = torch.frombuffer(array.array("i", values), dtype=torch.int32).view(outputs[i].shape)
        return self.dequantize(outputs, means, dtype)

    def build_indexes(self, scales: Tensor) -> Tensor:
        scales = self.lower_bound_scale(scales).contiguous()
        boundaries = self.scale_table[:-1].to(dtype=scales.dtype).contiguous()
        return torch.bucketize(scales, boundaries, right=False).int()
