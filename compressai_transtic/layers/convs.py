"""The convolutions between the Swin stages of the transforms: sizes divide or
multiply exactly by the stride."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .cache import DerivedValue

__all__ = ["conv", "deconv", "SubPixelConvTranspose2d"]


def conv(in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 2) -> nn.Conv2d:
    """Convolution with ``padding = kernel_size // 2``."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)


def deconv(
    in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 2, subpixel: bool = False
) -> nn.ConvTranspose2d:
    """Transposed convolution that multiplies the spatial size by ``stride`` exactly;
    with ``subpixel``, a :class:`SubPixelConvTranspose2d` (same parameters)."""
    kind = SubPixelConvTranspose2d if subpixel else nn.ConvTranspose2d
    return kind(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        output_padding=stride - 1,
    )


class SubPixelConvTranspose2d(nn.ConvTranspose2d):
    """A transposed convolution that, at inference on the CPU, runs as a convolution to
    ``stride ** 2`` output phases followed by :func:`torch.nn.functional.pixel_shuffle`.

    Output pixel ``(s i + r_y, s j + r_x)`` of a transposed convolution sums the input
    around ``(i, j)`` weighted by the kernel taps of phase ``(r_y, r_x)``; a plain
    convolution with those taps as ``s^2`` times the output channels computes every
    phase at once. It is the same function up to float rounding, with the parameters
    and state-dict keys of :class:`torch.nn.ConvTranspose2d`. PyTorch's CPU transposed
    convolution with few output channels (the synthesis transform's last layer, to 3
    channels) runs far below its convolution's speed. With autograd, on other devices
    or with ``subpixel`` off (complexity counting turns it off to count the layer as
    built), the module runs as the transposed convolution it is.

    Takes the arguments of :func:`deconv`'s layers: odd kernel, ``padding = kernel //
    2``, ``output_padding = stride - 1``, and the phases together must reach as far
    before as after (5x5 at stride 2 does; 3x3 at stride 2 does not). Its geometry is
    fixed: after a change of ``stride``, ``padding``, ``dilation`` or ``groups`` it runs
    as a transposed convolution. The phase weights are derived from the parameters, so
    set ``subpixel = False`` before scripting, tracing or exporting the module.
    """

    #: run the sub-pixel convolution at CPU inference; complexity counting turns it off
    subpixel: bool = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        padding: int,
        output_padding: int,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, output_padding=output_padding
        )
        if kernel_size % 2 == 0 or padding != kernel_size // 2 or output_padding != stride - 1:
            raise ValueError(
                f"a sub-pixel transposed convolution needs an odd kernel, padding = kernel // 2 and output_padding = "
                f"stride - 1; got kernel {kernel_size}, padding {padding}, output_padding {output_padding}"
            )
        low, high = _phase_offsets(kernel_size, stride, padding)
        if low != -high:
            raise ValueError(
                f"a sub-pixel transposed convolution needs phases that reach as far before as after; a "
                f"{kernel_size}x{kernel_size} kernel at stride {stride} reaches input offsets {low}..{high}"
            )
        self._reach = high
        self._geometry = self._current_geometry()
        self._derived: DerivedValue[Tuple[Tensor, Optional[Tensor]]] = DerivedValue()

    def forward(self, x: Tensor, output_size: Optional[List[int]] = None) -> Tensor:
        if not self._runs_subpixel(x) or output_size is not None:
            return super().forward(x, output_size)
        weight, bias = self._derived.get([self.weight, self.bias], self._phase_weights)
        return F.pixel_shuffle(F.conv2d(x, weight, bias, padding=self._reach), self.stride[0])

    def _runs_subpixel(self, x: Tensor) -> bool:
        return (
            self.subpixel
            and not torch.is_grad_enabled()
            and x.device.type == "cpu"
            and self._current_geometry() == self._geometry
        )

    def _current_geometry(self) -> Tuple[object, ...]:
        return (self.stride, self.padding, self.output_padding, self.dilation, self.groups, self.padding_mode)

    def _phase_weights(self) -> Tuple[Tensor, Optional[Tensor]]:
        """The convolution's ``(weight, bias)``: output channel ``(o, r_y, r_x)`` (the
        order :func:`~torch.nn.functional.pixel_shuffle` reads) has at input offset
        ``(t_y, t_x)`` the tap ``(r_y + p - s t_y, r_x + p - s t_x)`` of the kernel,
        where that lies inside it, else zero."""
        s, p, reach = self.stride[0], int(self.padding[0]), self._reach
        kernel = self.kernel_size[0]
        w = self.weight.detach()  # (in, out, k, k)
        phases = w.new_zeros(w.shape[1], s, s, w.shape[0], 2 * reach + 1, 2 * reach + 1)
        taps = [(r, t, r + p - s * t) for r in range(s) for t in range(-reach, reach + 1)]
        for r_y, t_y, k_y in taps:
            for r_x, t_x, k_x in taps:
                if 0 <= k_y < kernel and 0 <= k_x < kernel:
                    phases[:, r_y, r_x, :, t_y + reach, t_x + reach] = w[:, :, k_y, k_x].t()
        bias = None if self.bias is None else self.bias.detach().repeat_interleave(s * s)
        return phases.reshape(-1, w.shape[0], 2 * reach + 1, 2 * reach + 1), bias


def _phase_offsets(kernel: int, stride: int, padding: int) -> Tuple[int, int]:
    """The least and greatest input offsets ``t`` (input ``i + t`` for output ``s i + r``)
    that a kernel tap ``k = r + padding - stride t`` in ``[0, kernel)`` reaches, over all
    phases ``r``."""
    offsets = [t for r in range(stride) for t in range(-kernel, kernel + 1) if 0 <= r + padding - stride * t < kernel]
    return min(offsets), max(offsets)
