"""Where the windows of a Swin block fall on a feature map.

A block pads the map at the bottom/right to a multiple of its window, shifts it
cyclically by ``shift`` and cuts it into windows. :class:`WindowGeometry` holds those
sizes; it moves tokens between the map and the window order with one gather through
a cached index, instead of ``roll`` + ``permute`` + ``reshape`` copies.

Windows come in :func:`window_order`, which puts the windows of the last row and
column last: only those can carry shift or padding masks, so the others share one
broadcast bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .cache import LRUCache

__all__ = [
    "WindowGeometry",
    "ceil_to",
    "window_order",
    "window_partition_index",
    "window_unpartition_index",
    "composed_index",
]

_INDEX_CACHE: LRUCache[Tensor] = LRUCache(256)


def ceil_to(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    return int(math.ceil(value / multiple) * multiple)


def window_order(windows_h: int, windows_w: int) -> Tensor:
    """Permutation of raster window ids that puts the last window row and column last.

    Shifted-window masks only fall on the last row/column, and so do padding masks
    unless padding and shift together reach past one window; with this order the
    unmasked windows come first and share one broadcast bias, and only the few
    boundary windows need a mask of their own.
    """
    ids = torch.arange(windows_h * windows_w).view(windows_h, windows_w)
    boundary = torch.zeros(windows_h, windows_w, dtype=torch.bool)
    boundary[-1, :] = True
    boundary[:, -1] = True
    return torch.cat([ids[~boundary], ids[boundary]])


def _build_partition_index(height: int, width: int, window: int, shift: int, device: torch.device) -> Tensor:
    grid = torch.arange(height * width, dtype=torch.long).view(height, width)
    if shift:
        grid = torch.roll(grid, shifts=(-shift, -shift), dims=(0, 1))
    grid = grid.view(height // window, window, width // window, window).permute(0, 2, 1, 3)
    grid = grid.reshape(-1, window * window)[window_order(height // window, width // window)]
    return grid.reshape(-1).to(device)


def window_partition_index(height: int, width: int, window: int, shift: int, device: torch.device) -> Tensor:
    """Index that gathers a flattened ``height x width`` map into shifted windows.

    ``tokens.index_select(1, idx)`` equals ``roll(map, (-shift, -shift))`` followed by the
    usual window partition, with windows in :func:`window_order` and tokens in raster
    order inside each window. :func:`window_unpartition_index` undoes it.
    """
    key = ("part", height, width, window, shift, str(device))
    return _INDEX_CACHE.get_or_build(key, lambda: _build_partition_index(height, width, window, shift, device))


def window_unpartition_index(height: int, width: int, window: int, shift: int, device: torch.device) -> Tensor:
    """Inverse of :func:`window_partition_index`: window order back to the map."""
    key = ("inv", height, width, window, shift, str(device))
    return _INDEX_CACHE.get_or_build(
        key, lambda: torch.argsort(window_partition_index(height, width, window, shift, device))
    )


def composed_index(
    height: int, width: int, window: int, shift_from: int, shift_to: int, device: torch.device
) -> Tensor:
    """Index taking tokens from the window order of ``shift_from`` to that of ``shift_to``."""

    def build() -> Tensor:
        inv = window_unpartition_index(height, width, window, shift_from, device)
        return inv[window_partition_index(height, width, window, shift_to, device)]

    return _INDEX_CACHE.get_or_build(("comp", height, width, window, shift_from, shift_to, str(device)), build)


@dataclass(frozen=True)
class WindowGeometry:
    """The windows of one block on one feature map.

    Attributes:
        height, width: the padded map, multiples of ``window``.
        valid_height, valid_width: the map before padding (the rest is padding).
        window: side of the square windows.
        shift: cyclic shift of the map before it is cut (0 for unshifted blocks).
    """

    height: int
    width: int
    valid_height: int
    valid_width: int
    window: int
    shift: int = 0

    @classmethod
    def cover(cls, height: int, width: int, window: int, shift: int = 0) -> WindowGeometry:
        """The geometry that pads a ``height x width`` map to whole windows."""
        return cls(ceil_to(height, window), ceil_to(width, window), height, width, window, shift)

    # -- sizes ------------------------------------------------------------------------
    @property
    def windows_h(self) -> int:
        return self.height // self.window

    @property
    def windows_w(self) -> int:
        return self.width // self.window

    @property
    def num_windows(self) -> int:
        return self.windows_h * self.windows_w

    @property
    def window_tokens(self) -> int:
        """Tokens per window, ``window ** 2``."""
        return self.window * self.window

    @property
    def padded(self) -> bool:
        return (self.height, self.width) != (self.valid_height, self.valid_width)

    def with_shift(self, shift: int) -> WindowGeometry:
        """The same map cut with another shift (the next block of a stage)."""
        return replace(self, shift=shift)

    def downsampled(self, factor: int) -> WindowGeometry:
        """The geometry of a map ``factor`` times smaller that covers the padded map
        (a prompt map): its windows sit on this geometry's windows, and it has no
        padding of its own."""
        h, w = self.height // factor, self.width // factor
        return WindowGeometry(h, w, h, w, self.window // factor, self.shift // factor)

    # -- cached indices -----------------------------------------------------------------
    def partition_index(self, device: torch.device) -> Tensor:
        return window_partition_index(self.height, self.width, self.window, self.shift, device)

    def unpartition_index(self, device: torch.device) -> Tensor:
        return window_unpartition_index(self.height, self.width, self.window, self.shift, device)

    def reorder_index(self, to: WindowGeometry, device: torch.device) -> Tensor:
        """Index that takes tokens from this window order to that of ``to`` (same map,
        same window, another shift)."""
        return composed_index(self.height, self.width, self.window, self.shift, to.shift, device)

    # -- tensors ------------------------------------------------------------------------
    def pad(self, x: Tensor) -> Tensor:
        """``(B, valid H, valid W, C)`` -> ``(B, H, W, C)``, zero padding at the bottom/right."""
        if not self.padded:
            return x
        return F.pad(x, (0, 0, 0, self.width - self.valid_width, 0, self.height - self.valid_height))

    def crop(self, x: Tensor) -> Tensor:
        """``(B, H, W, C)`` -> ``(B, valid H, valid W, C)``, a contiguous tensor when cropped."""
        return x[:, : self.valid_height, : self.valid_width, :].contiguous() if self.padded else x

    def partition(self, x: Tensor) -> Tensor:
        """``(B, H, W, C)`` -> ``(B, nW, window^2, C)`` after the cyclic shift, windows in
        :func:`window_order` (one gather; a fresh tensor)."""
        b, c = x.shape[0], x.shape[-1]
        idx = self.partition_index(x.device)
        return x.reshape(b, self.height * self.width, c).index_select(1, idx).view(self._windowed(b, c))

    def unpartition(self, t: Tensor) -> Tensor:
        """Inverse of :meth:`partition`: ``(B, nW, window^2, C)`` -> ``(B, H, W, C)``."""
        b, c = t.shape[0], t.shape[-1]
        inv = self.unpartition_index(t.device)
        return t.reshape(b, self.height * self.width, c).index_select(1, inv).view(b, self.height, self.width, c)

    def partition_reference(self, x: Tensor) -> Tensor:
        """:meth:`partition` the plain way (``roll``, ``view``, ``permute``), windows in
        raster order; always a fresh tensor."""
        b, c, ws = x.shape[0], x.shape[-1], self.window
        xs = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2)) if self.shift else x
        out = xs.view(b, self.windows_h, ws, self.windows_w, ws, c).permute(0, 1, 3, 2, 4, 5)
        return out.reshape(self._windowed(b, c)).clone()

    def unpartition_reference(self, t: Tensor) -> Tensor:
        """Inverse of :meth:`partition_reference`."""
        b, c, ws = t.shape[0], t.shape[-1], self.window
        out = t.reshape(b, self.windows_h, self.windows_w, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
        out = out.reshape(b, self.height, self.width, c)
        return torch.roll(out, shifts=(self.shift, self.shift), dims=(1, 2)) if self.shift else out

    def _windowed(self, b: int, c: int) -> Tuple[int, int, int, int]:
        return (b, self.num_windows, self.window_tokens, c)
