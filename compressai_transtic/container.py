"""The ``.ttic`` file: one coded image with everything its decoder needs to know.

A decoder takes the codec, its weights and the image size from the file itself (never
from a position in a table, as CompressAI's ``examples/codec.py`` does), and refuses
to decode with weights other than those the file was coded with.

==========  ======================================================================
bytes       field
==========  ======================================================================
4           magic ``TTIC``
1           container version (1)
varint + n  codec description, UTF-8 JSON: ``architecture``, ``quality``, ``task``,
            ``source`` (``pretrained`` / ``random`` / ``adapter``), ``seed``,
            ``adapter`` (file name), ``random_base``, ``config`` (TransTIC prompt
            configuration); for an adapter on a base codec checkpoint
            (``--base-checkpoint``) also ``base`` (its file name) and
            ``base_sha256`` (its hash, as the adapter file records it)
varint + n  name of the weights, UTF-8 (e.g. ``det_1.pth.tar``)
32          SHA-256 of the weights (:func:`weights_fingerprint` of the model)
varint      original image height
varint      original image width
varint      number of strings (3: y, z and the model's per-image header)
varint + n  each string: length, then its bytes
4           CRC-32 of all the bytes before it (big endian)
==========  ======================================================================

Every count and length is checked against the bytes that are actually there before
anything is allocated; every failure is a :class:`ContainerError`.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
import zlib
from dataclasses import dataclass
from typing import Any, List, Mapping, Tuple

import torch
from torch import nn

from .bitstream import BitstreamError, varint
from .console import shorten

__all__ = ["ContainerError", "CodedFile", "pack", "unpack", "weights_fingerprint", "SUFFIX", "MAGIC"]

MAGIC = b"TTIC"
VERSION = 1
SUFFIX = ".ttic"
_MAX_TEXT = 1 << 16
_MAX_STRINGS = 16
#: derived from the image size, the architecture or the configuration (which the file
#: records and decode checks) alone, so left out of the fingerprint
_DERIVED = ("attn_mask", "relative_position_index", "num_batches_tracked", "prompt_settings")


class ContainerError(BitstreamError):
    """A file that is not a complete, unmodified ``.ttic`` file of a known version."""


@dataclass(frozen=True)
class CodedFile:
    """The content of one ``.ttic`` file."""

    codec: Mapping[str, Any]
    weights_name: str
    weights_sha256: str
    height: int
    width: int
    strings: Tuple[bytes, ...]

    @property
    def latent_shape(self) -> Tuple[int, int]:
        """The ``shape`` argument of the model's ``decompress`` (the size of z)."""
        return (-(-self.height // 64), -(-self.width // 64))


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 of every tensor a decoder depends on (names, shapes, dtypes, values),
    entropy tables included; masks and indexes that follow from the size are left out."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        if key.rsplit(".", 1)[-1] in _DERIVED:
            continue
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{tuple(t.shape)}|{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _field(data: bytes) -> bytes:
    return varint(len(data)) + data


def pack(coded: CodedFile) -> bytes:
    """The bytes of a ``.ttic`` file."""
    if len(coded.strings) > _MAX_STRINGS:
        raise ValueError(f"at most {_MAX_STRINGS} strings per file")
    body = bytearray(MAGIC + bytes([VERSION]))
    body += _field(json.dumps(dict(coded.codec), sort_keys=True).encode())
    body += _field(coded.weights_name.encode())
    body += bytes.fromhex(coded.weights_sha256)
    body += varint(coded.height) + varint(coded.width) + varint(len(coded.strings))
    for string in coded.strings:
        body += _field(bytes(string))
    return bytes(body) + (zlib.crc32(body) & 0xFFFFFFFF).to_bytes(4, "big")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, count: int, what: str) -> bytes:
        if count > len(self.data) - self.pos:
            raise ContainerError(f"the file is truncated (it ends inside the {what})")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def varint(self, what: str, limit: int) -> int:
        value = shift = 0
        while True:
            byte = self.take(1, what)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 63:
                raise ContainerError(f"the {what} field is malformed")
        if value > limit:
            raise ContainerError(f"the {what} ({value}) exceeds its limit of {limit}")
        return value

    def text(self, what: str) -> str:
        raw = self.take(self.varint(f"{what} length", _MAX_TEXT), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ContainerError(f"the {what} is not UTF-8 text") from None


def unpack(data: bytes) -> CodedFile:
    """Parse and check the bytes of a ``.ttic`` file.

    Raises:
        ContainerError: what is wrong with it.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise ContainerError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if data[:4] != MAGIC:
        raise ContainerError("not a .ttic file (no TTIC signature at its start)")
    if len(data) < 9:
        raise ContainerError("the file is truncated")
    body, crc = data[:-4], int.from_bytes(data[-4:], "big")
    if zlib.crc32(body) & 0xFFFFFFFF != crc:
        raise ContainerError("checksum mismatch: the file is truncated or was modified")
    reader = _Reader(body)
    reader.take(4, "signature")
    version = reader.take(1, "version")[0]
    if version != VERSION:
        raise ContainerError(f"container version {version} is not supported (this version reads {VERSION})")
    try:
        codec = json.loads(reader.text("codec description"))
    except (ValueError, RecursionError) as exc:  # not JSON, nested too deep, a number of too many digits
        raise ContainerError(f"the codec description is not valid JSON ({shorten(str(exc))})") from None
    if not isinstance(codec, dict) or not isinstance(codec.get("architecture"), str):
        raise ContainerError("the codec description does not name an architecture")
    weights_name = reader.text("weights name")
    if any(unicodedata.category(c) == "Cc" for c in weights_name):
        raise ContainerError(f"the weights name {shorten(weights_name)!r} holds control characters")
    weights_sha256 = reader.take(32, "weights hash").hex()
    height = reader.varint("image height", 1 << 31)
    width = reader.varint("image width", 1 << 31)
    if height < 1 or width < 1:
        raise ContainerError(f"invalid image size {height}x{width}")
    count = reader.varint("string count", _MAX_STRINGS)
    strings: List[bytes] = []
    for i in range(count):
        strings.append(reader.take(reader.varint(f"length of string {i}", len(body)), f"string {i}"))
    if reader.pos != len(body):
        raise ContainerError(f"{len(body) - reader.pos} unexpected bytes after the last string")
    return CodedFile(codec, weights_name, weights_sha256, height, width, tuple(strings))
