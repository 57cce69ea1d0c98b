"""Entropy models with the parameter layout of the released TransTIC checkpoints."""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from compressai.entropy_models import EntropyBottleneck, EntropyModel, GaussianConditional
from torch import Tensor

from .entropy_coder import CDF_PRECISION, SYMBOL_LIMIT, CodingTables, decode, encode
from .layers.cache import DerivedValue

__all__ = [
    "LegacyEntropyBottleneck",
    "BucketizedGaussianConditional",
    "SafeEntropyCoding",
    "MAX_PMF_LENGTH",
    "MAX_SCALES",
    "scale_table_problem",
]

#: the most symbols one table can code: a CDF of this precision rises strictly from 0
#: to 2**CDF_PRECISION, so it has at most that many steps (one is the escape)
MAX_PMF_LENGTH = 2**CDF_PRECISION - 1
#: the most entries of a scale table (CompressAI's default has 64); each is a CDF row
MAX_SCALES = 1024


def scale_table_problem(table: Tensor, multiplier: float) -> Optional[str]:
    """Why ``table`` cannot be a Gaussian conditional's scale table; ``None`` when it can.

    The entries must be finite, positive and rising (:meth:`build_indexes` bisects
    them), at most :data:`MAX_SCALES`, and each one's table (``2 * ceil(scale *
    multiplier) + 1`` symbols, ``multiplier`` from the tail mass) must fit a CDF.
    """
    if table.dim() != 1 or not 1 <= table.numel() <= MAX_SCALES:
        return f"it must be 1-D with 1 to {MAX_SCALES} entries, got shape {tuple(table.shape)}"
    values = table.detach().double().cpu()
    if not bool(torch.isfinite(values).all()) or not bool((values > 0).all()):
        return "its entries must be finite and positive"
    if not bool((values[1:] > values[:-1]).all()):
        return "its entries must rise strictly"
    longest = 2 * math.ceil(float(values[-1]) * multiplier) + 1
    if longest > MAX_PMF_LENGTH:
        largest = float(values[-1])
        return f"its largest scale {largest:.6g} needs {longest} symbols, more than a CDF holds ({MAX_PMF_LENGTH})"
    return None


class SafeEntropyCoding(EntropyModel):
    """``compress`` / ``decompress`` of CompressAI's entropy models through the
    memory-safe coder of :mod:`compressai_transtic.entropy_coder`, with the same CDF
    tables (``_quantized_cdf``, ``_cdf_length``, ``_offset``).

    The tables are checked and turned into coder models once per change of the buffers
    (``update``, ``load_state_dict``); invalid stored tables raise a ``ValueError``
    that says what is wrong instead of crashing the coder. Used as the second base of
    our entropy models, so that CompressAI's own ``compress(x)`` / ``decompress(strings,
    size)`` of :class:`EntropyBottleneck` reach it through ``super()``.
    """

    def coding_tables(self) -> CodingTables:
        """The validated tables, rebuilt whenever one of the buffers changes."""
        buffers = (self._quantized_cdf, self._cdf_length, self._offset)
        if any(t.numel() == 0 for t in buffers):
            raise ValueError(f"{type(self).__name__} has no coding tables: call update() (or update(force=True))")
        cache: DerivedValue[CodingTables] = self.__dict__.setdefault("_tables", DerivedValue())
        return cache.get(buffers, lambda: CodingTables.from_cdfs(*(t.detach().cpu().numpy() for t in buffers)))

    def compress(self, inputs: Tensor, indexes: Tensor, means: Optional[Tensor] = None) -> List[bytes]:
        """Entropy-code ``inputs`` (``(B, C, ...)``) with the tables picked by ``indexes``;
        one string per batch item."""
        if inputs.dim() < 2:
            raise ValueError(f"expected inputs with at least 2 dimensions, got shape {tuple(inputs.shape)}")
        if inputs.shape != indexes.shape:
            raise ValueError(f"inputs {tuple(inputs.shape)} and indexes {tuple(indexes.shape)} differ in shape")
        if not torch.isfinite(inputs).all() or (means is not None and not torch.isfinite(means).all()):
            raise ValueError("cannot entropy-code non-finite values (NaN or Inf in the latent or its means)")
        tables = self.coding_tables()
        values = torch.round(inputs - means) if means is not None else torch.round(inputs)
        if values.numel() and values.abs().max() >= SYMBOL_LIMIT:
            raise ValueError(
                f"latent values reach {values.abs().max().item():.3g}, beyond the entropy coder's range "
                f"(+-{SYMBOL_LIMIT}); the input, weights or prompts are out of their usual range"
            )
        symbols = values.to(torch.int64).cpu().numpy()
        index_array = indexes.detach().cpu().numpy()
        return [encode(symbols[i], index_array[i], tables) for i in range(symbols.shape[0])]

    def decompress(
        self,
        strings: List[bytes],
        indexes: Tensor,
        dtype: torch.dtype = torch.float,
        means: Optional[Tensor] = None,
    ) -> Tensor:
        """Decode what :meth:`compress` wrote: ``strings`` (one per batch item) with the
        same ``indexes`` (and ``means``).

        Raises:
            EntropyCodingError: a string that is not a complete stream for these indexes.
        """
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
        tables = self.coding_tables()
        index_array = indexes.detach().cpu().numpy()
        decoded = np.stack([decode(s, index_array[i], tables) for i, s in enumerate(strings)])
        outputs = torch.from_numpy(decoded).view(indexes.shape).to(indexes.device)
        return self.dequantize(outputs, means, dtype)


class LegacyEntropyBottleneck(EntropyBottleneck, SafeEntropyCoding):
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
    * Coding: through :class:`SafeEntropyCoding` (memory-safe on any input).

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

    def update(self, force: bool = False, update_quantiles: bool = False) -> bool:
        """CompressAI's ``update``, after checking that the quantiles make tables a CDF
        can hold (quantiles far apart would make it allocate without bound)."""
        if self._offset.numel() > 0 and not force:
            return False
        before = self.quantiles.detach().clone()
        if update_quantiles:
            self._update_quantiles()
        problem = self.quantiles_problem()
        if problem is not None:
            with torch.no_grad():
                self.quantiles.copy_(before)  # a refused update changes nothing
            raise ValueError(f"cannot build the entropy bottleneck's coding tables: {problem}")
        return super().update(force=True)

    def quantiles_problem(self) -> Optional[str]:
        """Why the quantiles cannot make coding tables (``None`` when they can): each
        channel's table spans its quantiles, rounded up on both sides of the median."""
        q = self.quantiles.detach().double().cpu()[:, 0, :]
        if not bool(torch.isfinite(q).all()):
            return "the quantiles hold NaN or Inf"
        median = q[:, 1]
        lengths = (median - q[:, 0]).ceil().clamp(min=0) + (q[:, 2] - median).ceil().clamp(min=0) + 1
        longest = int(lengths.argmax())
        if lengths[longest] > MAX_PMF_LENGTH:
            return (
                f"the quantiles of channel {longest} span {lengths[longest]:.6g} symbols, more than a CDF holds "
                f"({MAX_PMF_LENGTH}); the weights are damaged"
            )
        return None

    def _collect(self, prefix: str, count: int) -> List[Tensor]:
        return [getattr(self, f"{prefix}{i}") for i in range(count)]

    @property
    def matrices(self) -> List[Tensor]:
        return self._collect("_matrix", len(self.filters) + 1)

    @property
    def biases(self) -> List[Tensor]:
        return self._collect("_bias", len(self.filters) + 1)

    @property
    def factors(self) -> List[Tensor]:
        return self._collect("_factor", len(self.filters))


class BucketizedGaussianConditional(GaussianConditional, SafeEntropyCoding):
    """CompressAI's :class:`~compressai.entropy_models.GaussianConditional` coded through
    :class:`SafeEntropyCoding`, with :meth:`build_indexes` as one
    :func:`torch.bucketize`: CompressAI compares the scales with every entry of the
    scale table in turn (64 passes over the latent); each scale gets the number of
    table entries (the last one left out) that are smaller than it, as there.
    """

    def update_scale_table(self, scale_table: Union[Sequence[float], Tensor], force: bool = False) -> bool:
        """CompressAI's ``update_scale_table``, after checking the new table
        (:func:`scale_table_problem`); a refused table leaves the model as it was."""
        if self._offset.numel() > 0 and not force:
            return False
        return super().update_scale_table(self.checked_scale_table(scale_table), force=True)

    def checked_scale_table(self, scale_table: Union[Sequence[float], Tensor]) -> Tensor:
        """``scale_table`` as the 1-D tensor CompressAI makes of it, or a ``ValueError``
        saying why it cannot be this model's table (:func:`scale_table_problem`)."""
        try:
            if len(scale_table) > MAX_SCALES:
                raise ValueError(f"{len(scale_table)} entries, more than {MAX_SCALES}")
            table = self._prepare_scale_table(scale_table)
        except (TypeError, ValueError) as exc:
            reason = f"it must be a sequence of at most {MAX_SCALES} numbers ({exc})"
            raise ValueError(f"scale table refused: {reason}") from None
        problem = scale_table_problem(table, self.tail_multiplier())
        if problem is not None:
            raise ValueError(f"scale table refused: {problem}")
        return table

    def tail_multiplier(self) -> float:
        """How many scales from the mean a table reaches (from the tail mass)."""
        return float(-self._standardized_quantile(self.tail_mass / 2))

    def build_indexes(self, scales: Tensor) -> Tensor:
        scales = self.lower_bound_scale(scales).contiguous()
        boundaries = self.scale_table[:-1].to(dtype=scales.dtype).contiguous()
        return torch.bucketize(scales, boundaries, right=False).int()
