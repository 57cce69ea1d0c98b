"""Quality maps of ROI coding: checking, quantising, coding and sampling them.

A *quality map* says, per image position, how much the task needs it: 1 = full
quality, 0 = background. The ROI codec (:class:`~compressai_transtic.models.TICROI`)
works with the map on the grid of the latent ``y`` (one cell per 16 x 16 pixels of the
padded image), quantised to ``levels`` values ``0, 1/(levels-1), ..., 1``, because the
decoder must see exactly the map the encoder used: the cells travel in the bitstream
(:func:`pack_map`, zlib-compressed), and a decoder reads them back within the bounds the
image header sets (:func:`unpack_map`).

A leaf module: no model imports.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .bitstream import BitstreamError

__all__ = [
    "CELL",
    "QualityMapSampler",
    "box_map",
    "check_quality_map",
    "grid_size",
    "pack_map",
    "quantize_map",
    "random_quality_map",
    "unpack_map",
]

#: pixels per grid cell along each side: the stride of the latent ``y``
CELL = 16
_MAGIC = b"QM"
_HEADER = struct.Struct(">2sHHB")


def grid_size(height: int, width: int, multiple: int) -> Tuple[int, int]:
    """Cells of the map grid for an image padded to ``multiple``."""
    return (math.ceil(height / multiple) * multiple // CELL, math.ceil(width / multiple) * multiple // CELL)


def check_quality_map(quality_map: Tensor, batch: int) -> Tensor:
    """A user's map as a float ``(B, 1, h, w)`` tensor in [0, 1].

    Accepts ``(h, w)`` (one map for the whole batch), ``(B, h, w)`` or ``(B, 1, h, w)``.

    Raises:
        ValueError: another shape or batch size, non-finite values, values outside [0, 1].
    """
    if not isinstance(quality_map, Tensor) or quality_map.dim() not in (2, 3, 4):
        raise ValueError("a quality map is a (H, W), (B, H, W) or (B, 1, H, W) tensor of values in [0, 1]")
    m = quality_map.float()
    if m.dim() == 2:
        m = m.expand(batch, 1, *m.shape)
    elif m.dim() == 3:
        m = m[:, None]
    if m.shape[0] != batch or m.shape[1] != 1 or min(m.shape[-2:]) < 1:
        raise ValueError(f"quality map of shape {tuple(quality_map.shape)} for a batch of {batch} images")
    if not torch.isfinite(m).all() or m.min() < 0 or m.max() > 1:
        raise ValueError("quality map values must be finite and within [0, 1]")
    return m


def quantize_map(quality_map: Tensor, image_size: Sequence[int], grid: Sequence[int], levels: int) -> Tensor:
    """The map on the latent grid, as level indexes ``0 .. levels-1`` (uint8, ``(B, 1, gh, gw)``).

    The map is resized to the image (bilinear) when its size differs, padded like the
    image (replicate, bottom/right) to the grid's extent, averaged over each 16 x 16
    cell and rounded to the nearest level.
    """
    h, w = (int(s) for s in image_size)
    m = quality_map
    if tuple(m.shape[-2:]) != (h, w):
        m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    m = F.pad(m, (0, grid[1] * CELL - w, 0, grid[0] * CELL - h), mode="replicate")
    cells = F.avg_pool2d(m, CELL)
    return torch.round(cells * (levels - 1)).to(torch.uint8)


def pack_map(levels_index: Tensor, levels: int) -> bytes:
    """One image's quantised map ``(1, gh, gw)`` or ``(gh, gw)`` as a map string."""
    cells = levels_index.reshape(levels_index.shape[-2:]).to(torch.uint8).cpu()
    gh, gw = cells.shape
    if max(gh, gw) > 0xFFFF:
        raise ValueError(f"a quality map of {gh}x{gw} cells is too large to code (at most 65535 per side)")
    return _HEADER.pack(_MAGIC, gh, gw, levels) + zlib.compress(cells.numpy().tobytes(), 9)


def unpack_map(data: bytes, grid: Sequence[int], levels: int) -> Tensor:
    """The level indexes ``(1, gh, gw)`` of a map string, checked against the grid the
    image header implies and the codec's level count; decompression never produces
    more than ``gh * gw`` bytes, and nothing may follow the map. (The header's CRC does
    not cover map strings; zlib's own checksum does.)

    Raises:
        BitstreamError: a malformed, truncated or foreign map string.
    """
    if not isinstance(data, (bytes, bytearray)) or len(data) < _HEADER.size:
        raise BitstreamError("quality-map string is truncated")
    magic, gh, gw, stored_levels = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise BitstreamError("not a quality-map string")
    if (gh, gw) != tuple(grid) or stored_levels != levels:
        raise BitstreamError(
            f"quality map of {gh}x{gw} cells and {stored_levels} levels, expected {grid[0]}x{grid[1]} and {levels}"
        )
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(bytes(data[_HEADER.size :]), gh * gw + 1)
    except zlib.error as exc:
        raise BitstreamError(f"quality-map string is corrupt ({exc})") from None
    if len(raw) != gh * gw or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise BitstreamError("quality-map string does not hold exactly one map of the declared size")
    cells = torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(1, gh, gw)
    if int(cells.max()) >= levels:
        raise BitstreamError(f"quality-map string holds levels above {levels - 1}")
    return cells


def random_quality_map(size: Sequence[int], generator: Optional[torch.Generator] = None) -> Tensor:
    """A random map ``(1, h, w)`` in [0, 1] of one of three kinds, as in the training of
    spatially-adaptive codecs (Song, Choi, Lee, ICCV 2021): a uniform level, a linear
    ramp in a random direction, or one to three rectangles of random level on a random
    background."""
    h, w = (int(s) for s in size)

    def uniform(*shape: int) -> Tensor:
        return torch.rand(shape, generator=generator)

    kind = int(torch.randint(3, (1,), generator=generator))
    if kind == 0:
        return uniform(1).expand(1, h, w).clone()
    if kind == 1:
        ys = torch.linspace(0, 1, h)[:, None]
        xs = torch.linspace(0, 1, w)[None, :]
        angle = float(uniform(1)) * 2 * math.pi
        ramp = math.cos(angle) * xs + math.sin(angle) * ys
        ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min()).clamp_min(1e-12)
        return ramp[None].clone()
    m = uniform(1).expand(1, h, w).clone()
    for _ in range(1 + int(torch.randint(3, (1,), generator=generator))):
        top, left = (int(v * s) for v, s in zip(uniform(2).tolist(), (h, w)))
        bottom = top + 1 + int(float(uniform(1)) * (h - top))
        right = left + 1 + int(float(uniform(1)) * (w - left))
        m[:, top:bottom, left:right] = uniform(1)
    return m


class QualityMapSampler(nn.Module):
    """Draws the random training maps of an ROI codec (:func:`random_quality_map`), one
    per image, on the latent grid.

    It holds no tensors. Each image's draw uses the generator :meth:`generators` gives
    (the global one by default); sample-keyed training
    (:class:`compressai_transtic.training.randomness.SampleKeyedRandomness`) replaces it
    by one generator per sample key, so that the maps do not depend on how a batch is
    split over processes or on a resume.
    """

    def generators(self, batch: int) -> List[Optional[torch.Generator]]:
        return [None] * batch

    def forward(self, batch: int, grid: Sequence[int]) -> Tensor:
        """``(batch, 1, gh, gw)`` maps in [0, 1] (CPU, float32)."""
        return torch.stack([random_quality_map(grid, g) for g in self.generators(batch)])


def box_map(boxes: Sequence[Sequence[float]], source_size: Sequence[int], size: Sequence[int]) -> Tensor:
    """A map ``(1, h, w)`` that is 1 inside the boxes and 0 elsewhere.

    Args:
        boxes: ``(x, y, width, height)`` boxes (COCO's layout) in the coordinates of
            an image of ``source_size`` ``(height, width)``.
        size: ``(h, w)`` of the map: the image the boxes are drawn over, resized.
    """
    h, w = (int(s) for s in size)
    sy, sx = h / float(source_size[0]), w / float(source_size[1])
    m = torch.zeros(1, h, w)
    for bx, by, bw, bh in boxes:
        left, top = max(0, math.floor(bx * sx)), max(0, math.floor(by * sy))
        right, bottom = min(w, math.ceil((bx + bw) * sx)), min(h, math.ceil((by + bh) * sy))
        m[:, top:bottom, left:right] = 1.0
    return m
