"""Per-image bitstream header of the TIC / TransTIC codecs.

``compress`` returns CompressAI's ``{"strings": [y_strings, z_strings, header_strings],
"shape": z_size}``. The third list holds, per image, a small header that makes the
bitstream self-describing and tamper-evident:

======  =====================================================
bytes   content
======  =====================================================
1       magic ``0xA7``
1       format version (2: y and z coded by :mod:`compressai_transtic.entropy_coder`)
varint  original image height
varint  original image width
4       CRC-32 of the z string followed by the y string (big endian)
======  =====================================================

Its bytes are counted in the rate (CompressAI's ``eval_model`` sums all strings), so the
reported bpp is that of a complete, decodable bitstream.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Tuple, Union

__all__ = ["BitstreamError", "Header", "pack_header", "unpack_header", "checksum", "varint"]

MAGIC = 0xA7
VERSION = 2


class BitstreamError(ValueError):
    """Raised for a bitstream that is truncated, modified or not produced by this codec."""


@dataclass(frozen=True)
class Header:
    """Decoded header: original image size and payload checksum."""

    height: int
    width: int
    crc: int


def checksum(z_string: Union[bytes, bytearray], y_string: Union[bytes, bytearray]) -> int:
    """CRC-32 over the z string then the y string."""
    return zlib.crc32(y_string, zlib.crc32(z_string)) & 0xFFFFFFFF


def varint(value: int) -> bytes:
    """LEB128 bytes of a non-negative integer (7 bits a byte, low bits first)."""
    if value < 0:
        raise ValueError(f"cannot encode negative value {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> Tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise BitstreamError("bitstream header is truncated (incomplete image size)")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 35:
            raise BitstreamError("bitstream header is corrupt (image size field too long)")


def pack_header(height: int, width: int, z_string: bytes, y_string: bytes) -> bytes:
    """Header bytes for one image."""
    return bytes([MAGIC, VERSION]) + varint(height) + varint(width) + checksum(z_string, y_string).to_bytes(4, "big")


def unpack_header(data: bytes) -> Header:
    """Parse a header produced by :func:`pack_header`.

    Raises:
        BitstreamError: the bytes are not a valid header of this format.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise BitstreamError(f"bitstream header must be bytes, got {type(data).__name__}")
    if len(data) < 2 or data[0] != MAGIC:
        raise BitstreamError("not a TIC/TransTIC bitstream (bad header magic); was it produced by compressai_transtic?")
    if data[1] != VERSION:
        raise BitstreamError(f"unsupported bitstream format version {data[1]} (this version reads {VERSION})")
    height, pos = _read_varint(data, 2)
    width, pos = _read_varint(data, pos)
    if len(data) != pos + 4:
        raise BitstreamError("bitstream header has the wrong length (truncated or modified)")
    if height < 1 or width < 1:
        raise BitstreamError(f"bitstream header holds an invalid image size {height}x{width}")
    return Header(height, width, int.from_bytes(data[pos:], "big"))
