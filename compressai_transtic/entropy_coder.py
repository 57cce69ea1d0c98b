"""Memory-safe entropy coding of integer symbols with CompressAI-format CDF tables.

CompressAI's rANS decoder (C++) trusts its input: a forged stream makes it read past
the end of its buffer, and a stream whose checksum was recomputed can crash the
process. Our codecs code their symbols with the same probability tables (CompressAI's
``_quantized_cdf`` / ``_cdf_length`` / ``_offset`` buffers, so the released weights and
CompressAI's ``update()`` keep working) through `constriction
<https://bamler-lab.github.io/constriction/>`_'s ANS coder, which is written in Rust:
every read is bounds-checked, invalid data raises an error, and decoding takes a fixed
amount of work per symbol. Any byte string decodes to some symbols or to a
:class:`EntropyCodingError`; it never crashes, hangs or allocates more than the
symbols asked for. A stream is accepted only if it is exactly what :func:`encode`
writes for the symbols it decodes to (checked by coding them again, which costs less
than decoding), so truncated, extended and spliced streams are refused.

Stream layout (little-endian 32-bit words of one ANS stack), in decoding order:

1. for each table ``k`` in increasing order, the positions whose index is ``k``, in
   raster order: symbol ``s - offset[k]`` under the table's pmf, whose last symbol is
   the escape (values outside the table);
2. for each escaped position in raster order, ``n``, the bit length of its raw value
   (uniform over 0..32), then the raw value's low ``min(n, 16)`` bits, then (``n > 16``)
   its high bits, each uniform. The raw value of ``v = s - offset`` is ``-2 v - 1``
   below the table and ``2 (v - (L - 2))`` above it, as in CompressAI's bypass mode.

Rates equal CompressAI's to a fraction of a percent: the same pmfs, quantised to
24 bits instead of 16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import constriction
import numpy as np

from .bitstream import BitstreamError

__all__ = ["EntropyCodingError", "CodingTables", "encode", "decode", "symbol_bits", "SYMBOL_LIMIT"]

#: CompressAI's CDF precision: every table runs from 0 to 2 ** 16
CDF_PRECISION = 16
#: symbols must satisfy ``|s| < SYMBOL_LIMIT``; the raw value of an escape then fits 32 bits
SYMBOL_LIMIT = 2**30
#: stored offsets beyond this are refused (CompressAI's tables hold a few hundred at most)
OFFSET_LIMIT = 2**20
_RAW_BITS = 32
_CHUNK_BITS = 16


class EntropyCodingError(BitstreamError):
    """A byte string that is not a complete stream of the given tables and indexes."""


@dataclass(frozen=True)
class CodingTables:
    """Validated coding tables: per table, its offset, escape symbol, symbol costs and
    constriction model."""

    offsets: np.ndarray  # (tables,) int64
    escape: np.ndarray  # (tables,) int64: the escape symbol of each table (its length - 2)
    models: Sequence[object]
    costs: np.ndarray  # (tables, longest) float64: -log2 of each symbol's probability

    @classmethod
    def from_cdfs(cls, quantized_cdf: np.ndarray, cdf_length: np.ndarray, offset: np.ndarray) -> "CodingTables":
        """Check CompressAI-format tables and build their models.

        Raises:
            ValueError: naming the table and what is wrong with it.
        """
        cdf = np.asarray(quantized_cdf)
        lengths = np.asarray(cdf_length).reshape(-1).astype(np.int64)
        offsets = np.asarray(offset).reshape(-1).astype(np.int64)
        if cdf.ndim != 2 or cdf.shape[0] < 1:
            raise ValueError(f"quantized CDF table must be 2-D with at least one row, got shape {cdf.shape}")
        if not (len(lengths) == len(offsets) == cdf.shape[0]):
            raise ValueError(
                f"{cdf.shape[0]} CDF rows, {len(lengths)} CDF lengths and {len(offsets)} offsets do not match"
            )
        if np.abs(offsets).max() > OFFSET_LIMIT:
            raise ValueError(f"CDF offsets must lie within +-{OFFSET_LIMIT}, got {int(np.abs(offsets).max())}")
        models: List[object] = []
        costs = np.full((cdf.shape[0], cdf.shape[1] - 1), np.inf)
        for k, (row, length) in enumerate(zip(cdf.astype(np.int64), lengths)):
            if not 3 <= length <= len(row):
                raise ValueError(f"CDF table {k}: length {length} outside 3..{len(row)}")
            values = row[:length]
            if values[0] != 0 or values[-1] != 2**CDF_PRECISION or np.any(np.diff(values) <= 0):
                raise ValueError(
                    f"CDF table {k} is not a valid CDF (it must rise strictly from 0 to {2**CDF_PRECISION}); "
                    "rebuild the tables with update(force=True)"
                )
            pmf = np.diff(values).astype(np.float64) / 2**CDF_PRECISION
            models.append(constriction.stream.model.Categorical(pmf, perfect=False))
            costs[k, : length - 1] = -np.log2(pmf)
        return cls(offsets=offsets, escape=lengths - 2, models=tuple(models), costs=costs)

    @property
    def size(self) -> int:
        return len(self.models)


def _split(symbols: np.ndarray, indexes: np.ndarray, tables: CodingTables):
    """Table symbols (escape where out of range) and raw values of the escaped positions."""
    relative = symbols.astype(np.int64) - tables.offsets[indexes]
    escape = tables.escape[indexes]
    escaped = (relative < 0) | (relative >= escape)
    coded = np.where(escaped, escape, relative).astype(np.int32)
    v = relative[escaped]
    raw = np.where(v < 0, -2 * v - 1, 2 * (v - escape[escaped]))
    return coded, escaped, raw


def _bit_length(raw: np.ndarray) -> np.ndarray:
    bits = np.zeros(raw.shape, dtype=np.int32)
    rest = raw.copy()
    while np.any(rest):
        bits += rest > 0
        rest >>= 1
    return bits


def _groups(indexes: np.ndarray, tables: CodingTables) -> List[Tuple[int, np.ndarray]]:
    """``(table, positions in raster order)`` of every table that codes a symbol, in table order."""
    order = np.argsort(indexes, kind="stable")
    bounds = np.cumsum(np.bincount(indexes, minlength=tables.size))
    starts = np.concatenate([[0], bounds[:-1]])
    return [(k, order[start:end]) for k, (start, end) in enumerate(zip(starts, bounds)) if end > start]


def _chunk_sizes(bits: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Escapes with low bits, their alphabet sizes, escapes with high bits, theirs."""
    low, high = bits > 0, bits > _CHUNK_BITS
    low_sizes = (1 << np.minimum(bits[low], _CHUNK_BITS)).astype(np.int32)
    high_sizes = (1 << (bits[high] - _CHUNK_BITS)).astype(np.int32)
    return low, low_sizes, high, high_sizes


def _check_indexes(indexes: np.ndarray, tables: CodingTables) -> np.ndarray:
    indexes = np.asarray(indexes).reshape(-1).astype(np.int64)
    if indexes.size and (indexes.min() < 0 or indexes.max() >= tables.size):
        raise ValueError(f"table indexes must lie in 0..{tables.size - 1}")
    return indexes


def symbol_bits(symbols: np.ndarray, indexes: np.ndarray, tables: CodingTables) -> np.ndarray:
    """What each symbol costs in a stream of :func:`encode` (its table symbol, plus the
    length and raw bits of an escape), in bits, shaped like ``symbols``. The sum is the
    stream's size up to the coder's rounding (a fraction of a percent)."""
    shape = np.shape(symbols)
    symbols = np.asarray(symbols).reshape(-1).astype(np.int64)
    indexes = _check_indexes(indexes, tables)
    coded, escaped, raw = _split(symbols, indexes, tables)
    bits = tables.costs[indexes, coded]
    bits[escaped] += np.log2(_RAW_BITS + 1) + _bit_length(raw)
    return bits.reshape(shape)


def encode(symbols: np.ndarray, indexes: np.ndarray, tables: CodingTables) -> bytes:
    """Code ``symbols`` (any shape, flattened in C order), each with the table
    ``indexes`` names, into one byte string.

    Raises:
        ValueError: symbols beyond :data:`SYMBOL_LIMIT`, or indexes that name no table.
    """
    symbols = np.asarray(symbols).reshape(-1).astype(np.int64)
    indexes = _check_indexes(indexes, tables)
    if symbols.shape != indexes.shape:
        raise ValueError(f"{symbols.size} symbols but {indexes.size} table indexes")
    if symbols.size and np.abs(symbols).max() >= SYMBOL_LIMIT:
        raise ValueError(f"symbols must lie within +-{SYMBOL_LIMIT - 1} (got {int(np.abs(symbols).max())})")
    coded, escaped, raw = _split(symbols, indexes, tables)
    bits = _bit_length(raw)
    coder = constriction.stream.stack.AnsCoder()
    uniform = constriction.stream.model.Uniform()
    # an ANS coder is a stack: push in the reverse of the decoding order
    low, low_sizes, high, high_sizes = _chunk_sizes(bits)
    if high_sizes.size:
        coder.encode_reverse((raw[high] >> _CHUNK_BITS).astype(np.int32), uniform, high_sizes)
    if low_sizes.size:
        coder.encode_reverse((raw[low] & (low_sizes - 1)).astype(np.int32), uniform, low_sizes)
    if bits.size:
        coder.encode_reverse(bits, constriction.stream.model.Uniform(_RAW_BITS + 1))
    for k, positions in reversed(_groups(indexes, tables)):
        coder.encode_reverse(coded[positions], tables.models[k])
    return coder.get_compressed().astype("<u4").tobytes()


def decode(data: bytes, indexes: np.ndarray, tables: CodingTables) -> np.ndarray:
    """Decode what :func:`encode` wrote for the same ``indexes`` and tables; returns the
    symbols as a flat int32 array.

    Raises:
        EntropyCodingError: ``data`` is not a complete stream of this many symbols.
        ValueError: indexes that name no table.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise EntropyCodingError(f"expected bytes, got {type(data).__name__}")
    if len(data) % 4:
        raise EntropyCodingError(f"stream length {len(data)} is not a multiple of 4 bytes")
    indexes = _check_indexes(indexes, tables)
    words = np.frombuffer(bytes(data), dtype="<u4").astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        coded = np.empty(indexes.shape, dtype=np.int64)
        for k, positions in _groups(indexes, tables):
            coded[positions] = coder.decode(tables.models[k], positions.size)
        escape = tables.escape[indexes]
        escaped = coded == escape
        raw = np.zeros(int(escaped.sum()), dtype=np.int64)
        if raw.size:
            bits = coder.decode(constriction.stream.model.Uniform(_RAW_BITS + 1), raw.size).astype(np.int64)
            uniform = constriction.stream.model.Uniform()
            low, low_sizes, high, high_sizes = _chunk_sizes(bits)
            if low_sizes.size:
                raw[low] = coder.decode(uniform, low_sizes)
            if high_sizes.size:
                raw[high] |= coder.decode(uniform, high_sizes).astype(np.int64) << _CHUNK_BITS
    except (ValueError, RuntimeError, OverflowError) as exc:
        raise EntropyCodingError(f"not a valid stream for these tables ({exc})") from exc
    values = np.where(raw & 1, -(raw >> 1) - 1, (raw >> 1) + escape[escaped])
    coded[escaped] = values
    symbols = coded + tables.offsets[indexes]
    if symbols.size and np.abs(symbols).max() >= SYMBOL_LIMIT:
        raise EntropyCodingError("the stream decodes to values no encoder writes")
    # An ANS decoder reads on past the end of its data (from its initial state), so a
    # truncated, extended or forged stream can still yield symbols: accept only the
    # exact coding of what was decoded.
    if encode(symbols, indexes, tables) != bytes(data):
        raise EntropyCodingError(
            "the stream is not the coding of the symbols it decodes to: it was truncated, extended or modified, "
            "or the decoder's tables are not the encoder's (other weights, another floating-point precision)"
        )
    return symbols.astype(np.int32)
