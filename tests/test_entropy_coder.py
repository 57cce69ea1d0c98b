"""The memory-safe entropy coder: exact round trips at the rate the tables promise, and no
byte string that can crash, hang or mislead the decoder."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from compressai.entropy_models import GaussianConditional
from compressai.models.base import get_scale_table

from compressai_transtic.bitstream import BitstreamError
from compressai_transtic.entropy_coder import (
    SYMBOL_LIMIT,
    CodingTables,
    EntropyCodingError,
    decode,
    encode,
    symbol_bits,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tables():
    """CompressAI's own Gaussian tables (64 scales), built by CompressAI."""
    gaussian = GaussianConditional(get_scale_table().tolist())
    gaussian.update()
    cdf, lengths, offsets = (t.numpy() for t in (gaussian._quantized_cdf, gaussian._cdf_length, gaussian._offset))
    return cdf, lengths, offsets


def ideal_bits(symbols: np.ndarray, indexes: np.ndarray, cdf, lengths, offsets) -> float:
    """Code length that the CDF tables promise, escapes at CompressAI's bypass cost or less."""
    total = 0.0
    for s, k in zip(symbols, indexes):
        length, v = int(lengths[k]), int(s) - int(offsets[k])
        escape = length - 2
        symbol = v if 0 <= v < escape else escape
        total -= math.log2((int(cdf[k][symbol + 1]) - int(cdf[k][symbol])) / 2**16)
        if symbol == escape:
            raw = -2 * v - 1 if v < 0 else 2 * (v - escape)
            total += math.log2(33) + raw.bit_length()
    return total


def test_round_trip_at_the_rate_of_the_tables(tables):
    rng = np.random.default_rng(0)
    indexes = rng.integers(0, 64, size=20000)
    scales = get_scale_table().numpy()[indexes]
    symbols = np.round(rng.normal(0, scales)).astype(np.int64)
    data = encode(symbols, indexes, CodingTables.from_cdfs(*tables))
    assert np.array_equal(decode(data, indexes, CodingTables.from_cdfs(*tables)), symbols)
    ideal = ideal_bits(symbols, indexes, *tables)
    assert ideal <= 8 * len(data) <= 1.003 * ideal + 64


def test_symbol_costs_are_what_the_tables_promise(tables):
    rng = np.random.default_rng(3)
    indexes = rng.integers(0, 64, size=3000)
    symbols = np.round(rng.normal(0, 3 * get_scale_table().numpy()[indexes])).astype(np.int64)
    symbols[::97] = rng.integers(-5000, 5000, size=symbols[::97].size)  # escapes
    costs = symbol_bits(symbols, indexes, CodingTables.from_cdfs(*tables))
    assert costs.shape == symbols.shape
    assert costs.sum() == pytest.approx(ideal_bits(symbols, indexes, *tables), rel=1e-9)


def test_escapes_of_every_bit_length_round_trip(tables):
    coding = CodingTables.from_cdfs(*tables)
    magnitudes = [0, 1, 2, 3, 100, 2**15, 2**16, 2**16 + 1, 2**20, 2**29, SYMBOL_LIMIT - 1]
    symbols = np.array([sign * m for m in magnitudes for sign in (1, -1)], dtype=np.int64)
    indexes = np.arange(symbols.size) % 64
    assert np.array_equal(decode(encode(symbols, indexes, coding), indexes, coding), symbols)


def test_no_symbols_make_an_empty_stream(tables):
    coding = CodingTables.from_cdfs(*tables)
    empty = np.zeros(0, dtype=np.int64)
    data = encode(empty, empty, coding)
    assert decode(data, empty, coding).size == 0


def test_symbols_beyond_the_limit_are_refused(tables):
    coding = CodingTables.from_cdfs(*tables)
    with pytest.raises(ValueError, match="symbols must lie within"):
        encode(np.array([SYMBOL_LIMIT]), np.array([0]), coding)
    with pytest.raises(ValueError, match="table indexes"):
        encode(np.array([0]), np.array([64]), coding)


BROKEN = "not a valid stream|not the coding of the symbols"


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda d: d[:-1], "multiple of 4"),
        (lambda d: d[:-4], BROKEN),
        (lambda d: d[4:], BROKEN),
        (lambda d: d + b"\x01\x00\x00\x00", BROKEN),
        (lambda d: d[:-4] + b"\0\0\0\0", BROKEN),
        (lambda d: d[:8] + bytes([d[8] ^ 1]) + d[9:], BROKEN),
    ],
    ids=["odd-length", "truncated", "head-cut", "extended", "zero-word", "bit-flip"],
)
def test_broken_streams_raise_a_bitstream_error(tables, mangle, message):
    coding = CodingTables.from_cdfs(*tables)
    rng = np.random.default_rng(1)
    indexes = rng.integers(0, 64, size=500)
    data = encode(rng.integers(-3, 4, size=500), indexes, coding)
    with pytest.raises(EntropyCodingError, match=message) as info:
        decode(mangle(data), indexes, coding)
    assert isinstance(info.value, BitstreamError)


def test_every_accepted_stream_is_the_coding_of_what_it_decodes_to(tables):
    """Even an empty string decodes (an ANS decoder starts from a valid state), but only to
    the symbols whose coding it is."""
    coding = CodingTables.from_cdfs(*tables)
    rng = np.random.default_rng(2)
    indexes = rng.integers(0, 64, size=300)
    accepted = 0
    for length in range(0, 40, 4):
        data = rng.bytes(length)
        try:
            symbols = decode(data, indexes, coding)
        except EntropyCodingError:
            continue
        accepted += 1
        assert encode(symbols, indexes, coding) == data
    assert accepted >= 1  # at least the empty string (length 0) decodes


FUZZ = textwrap.dedent(
    """
    import json, random, sys, torch
    from compressai_transtic.bitstream import BitstreamError, pack_header
    from compressai_transtic.models import TIC

    torch.manual_seed(0)
    model = TIC(N=16, M=16).eval()
    model.update(force=True)
    rng = random.Random(int(sys.argv[1]))
    x = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        enc = model.compress(x)
    ys, zs, _ = enc["strings"]

    def mutate(b):
        b = bytearray(b)
        for _ in range(rng.randint(1, 8)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)

    def forge(kind):
        y, z = ys[0], zs[0]
        h, w = 64, 80
        if kind == "random":
            y, z = rng.randbytes(rng.randrange(0, 64)), rng.randbytes(rng.randrange(0, 16))
        elif kind == "empty":
            y, z = b"", b""
        elif kind == "mutated":
            y, z = mutate(y), mutate(z) if rng.random() < 0.5 else z
        elif kind == "truncated":
            y, z = y[: rng.randrange(len(y))], z[: rng.randrange(len(z) + 1)]
        elif kind == "spliced":
            cut = rng.randrange(len(ys[0]))
            y, z = ys[0][:cut] + ys[1][cut:], zs[1]
        elif kind == "extended":
            y = y + rng.randbytes(4 * rng.randint(1, 4))
        elif kind == "big":  # a large size over tiny strings: refused by the pixel limit
            h, w = 100000, 100000
        header = pack_header(h, w, z, y)  # checksum recomputed: only the decoder can tell
        shape = ((h + 63) // 64, (w + 63) // 64)
        return [[y], [z], [header]], shape

    def through_a_file(strings, shape):
        # pack into a .ttic file, mutate it, recompute its CRC, read it back
        from compressai_transtic.container import CodedFile, pack, unpack
        import zlib
        coded = CodedFile({"architecture": "tic"}, "w", "00" * 32, shape[0] * 64, shape[1] * 64,
                          tuple(s[0] for s in strings))
        body = bytearray(pack(coded)[:-4])
        for _ in range(rng.randint(0, 4)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        data = bytes(body) + (zlib.crc32(body) & 0xFFFFFFFF).to_bytes(4, "big")
        back = unpack(data)  # may raise ContainerError (a BitstreamError)
        return [[s] for s in back.strings], back.latent_shape

    outcomes = {}
    for kind in ("random", "empty", "mutated", "truncated", "spliced", "extended", "big", "file"):
        counts = outcomes.setdefault(kind, {"error": 0, "decoded": 0})
        for _ in range(int(sys.argv[2])):
            try:
                strings, shape = forge(rng.choice(["empty", "mutated", "spliced"]) if kind == "file" else kind)
                if kind == "file":
                    strings, shape = through_a_file(strings, shape)
                with torch.no_grad():
                    x_hat = model.decompress(strings, shape)["x_hat"]
            except BitstreamError:
                counts["error"] += 1
            else:
                assert x_hat.shape[-2:] == (64, 80) and torch.isfinite(x_hat).all()
                assert 0 <= x_hat.min() and x_hat.max() <= 1
                counts["decoded"] += 1
    print(json.dumps(outcomes))
    """
)


@pytest.mark.slow
def test_forged_streams_with_valid_checksums_never_crash_the_decoder(tmp_path):
    """Run in a child process, so that a crash of the decoder fails the test."""
    script = tmp_path / "fuzz.py"
    script.write_text(FUZZ)
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # these sources, not an installed copy
    result = subprocess.run(
        [sys.executable, str(script), "0", "60"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"decoder process ended with {result.returncode}:\n{result.stderr[-3000:]}"
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(sum(c.values()) == 60 for c in outcomes.values())
    assert outcomes["big"] == {"error": 60, "decoded": 0}
    assert outcomes["extended"]["error"] == 60  # trailing data is never silently ignored
